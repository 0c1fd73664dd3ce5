"""Domain errors. Every one carries a message for the user and an HTTP status code; one
handler in ``backend.main`` renders them as ``{"detail": message}``."""

from __future__ import annotations


class AppError(Exception):
    status_code: int = 400

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class BadRequestError(AppError):
    status_code = 400


class UnauthorizedError(AppError):
    status_code = 401


class ForbiddenError(AppError):
    status_code = 403


class NotFoundError(AppError):
    status_code = 404


class ConflictError(AppError):
    status_code = 409


class PayloadTooLargeError(AppError):
    status_code = 413


class UnprocessableError(AppError):
    status_code = 422


class TooManyRequestsError(AppError):
    status_code = 429


class InsufficientStorageError(AppError):
    """The server's disk is full (ENOSPC): nothing of the failed request was kept."""

    status_code = 507


class ServiceUnavailableError(AppError):
    """A service the request needs (the image storage) cannot be reached; nothing was lost
    and the request can be repeated."""

    status_code = 503
