"""Mounts the web app on the API application: page routes, static files, HTML error pages
and the sqladmin CRUD views. ``backend.main.create_app`` calls ``mount_web(app)`` once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from backend.db import session_scope
from backend.deps import optional_user
from backend.errors import AppError, UnauthorizedError
from backend.input_guard import check_form
from backend.models import User
from backend.web.auth_pages import router as auth_router
from backend.web.challenge_pages import router as challenge_router
from backend.web.leaderboard_page import router as leaderboard_router
from backend.web.manage_pages import router as manage_router
from backend.web.submission_pages import router as submission_router
from backend.web.templating import STATIC_DIR, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(check_form)])
router.include_router(auth_router)
router.include_router(challenge_router)
router.include_router(leaderboard_router)
router.include_router(submission_router)
router.include_router(manage_router)

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]

log = logging.getLogger(__name__)

TITLES = {
    400: "That did not work",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Please check the form",
    405: "Not possible here",
    429: "Slow down",
    500: "Something went wrong on our side",
}
# What a browser visitor reads for errors that carry no message of ours (unknown URLs...).
MESSAGES = {
    403: "You are not allowed to see this page.",
    404: "There is no page at this address. It may have moved, or the link is mistyped.",
    405: "This address cannot be used that way.",
    500: "The server could not finish this request; nothing you did caused it. "
         "Please try again, and tell the organisers if it keeps happening.",
}


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/admin")):
        return False
    return "text/html" in request.headers.get("accept", "") or request.method == "POST"


def _user_of(request: Request) -> User | None:
    """The visitor, for the page header of an error page (its own short unit of work)."""
    try:
        with session_scope() as session:
            return optional_user(request, session)
    except (AppError, SQLAlchemyError):  # an error page must render even then
        return None


def _page_error_handler(api_handler: Handler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        err = cast(AppError, exc)
        if not wants_html(request) and api_handler is not None:
            result = api_handler(request, exc)
            return await result if isinstance(result, Awaitable) else result
        if isinstance(err, UnauthorizedError) and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return render(
            request,
            "error.html",
            {"title": TITLES.get(err.status_code, "Something went wrong"), "message": err.message},
            user=_user_of(request),
            status_code=err.status_code,
        )

    return handle


def _error_page(request: Request, status_code: int, message: str,
                user: User | None = None) -> Response:
    return render(request, "error.html",
                  {"title": TITLES.get(status_code, "Something went wrong"), "message": message},
                  user=user, status_code=status_code)


PageHandler = Callable[[Request, Exception], Response]


def _pages_first(page: PageHandler, api_handler: Handler) -> Handler:
    """A page for a browser; the API's own handler (JSON) for /api and other clients."""

    async def handle(request: Request, exc: Exception) -> Response:
        if wants_html(request):
            return page(request, exc)
        result = api_handler(request, exc)
        return await result if isinstance(result, Awaitable) else result

    return handle


def _http_error_page(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown URL, wrong method)."""
    err = cast(StarletteHTTPException, exc)
    detail = err.detail if isinstance(err.detail, str) else ""
    generic = detail in ("", HTTPStatus(err.status_code).phrase)
    message = MESSAGES.get(err.status_code, detail) if generic else detail
    return _error_page(request, err.status_code, message, _user_of(request))


def _invalid_request_page(request: Request, exc: Exception) -> Response:
    """A malformed page URL (e.g. a submission id that is not a number) is a page that does
    not exist; a malformed form post says which fields were wrong."""
    if request.method == "GET":
        return _error_page(request, 404, MESSAGES[404], _user_of(request))
    errors = cast(RequestValidationError, exc).errors()
    fields = "; ".join(f"{'.'.join(map(str, e.get('loc', ())[1:]))}: {e.get('msg')}"
                       for e in errors)
    return _error_page(request, 422, f"Some fields were not valid ({fields}).",
                       _user_of(request))


def _server_error_page(request: Request, exc: Exception) -> Response:
    """An unexpected exception (a bug; Starlette logs its traceback after this response)."""
    try:
        return _error_page(request, 500, MESSAGES[500])
    except Exception:  # the page itself must not fail: fall back to plain text
        log.exception("rendering the error page failed")
        return Response(MESSAGES[500], status_code=500, media_type="text/plain")


def _server_error_json(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": MESSAGES[500]}, status_code=500)


def _favicon() -> Response:
    return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})


def mount_web(app: FastAPI) -> None:
    app.include_router(router)
    app.add_api_route("/favicon.ico", _favicon, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    api_handler = cast(Handler | None, app.exception_handlers.get(AppError))
    app.add_exception_handler(AppError, _page_error_handler(api_handler))
    # Other handlers the API registered (e.g. for bad JSON) keep answering API clients.
    handlers = app.exception_handlers
    for exc_class, page, default in (
        (StarletteHTTPException, _http_error_page, http_exception_handler),
        (RequestValidationError, _invalid_request_page, request_validation_exception_handler),
        (Exception, _server_error_page, _server_error_json),
    ):
        api = cast(Handler, handlers.get(exc_class) or default)
        app.add_exception_handler(exc_class, _pages_first(page, api))
    from backend.web.admin_views import mount_admin

    mount_admin(app)
