"""Errors raised by the evaluator for bad input (never for bugs)."""


class EvaluationInputError(Exception):
    """Input that cannot be scored: the message names the file and what is wrong."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
