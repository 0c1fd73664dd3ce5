"""Dependencies of the page routes: the (optional) user from the session cookie, CSRF."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from backend.deps import optional_user
from backend.errors import UnauthorizedError
from backend.models import User
from backend.web import csrf


class LoginRequiredError(UnauthorizedError):
    """Rendered as a redirect to the login page (with ``next``) by the page error handler."""


async def page_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    """Async: it does no I/O, and a sync dependency costs every page a thread-pool hop."""
    return _required(user)


def page_user_of(request: Request, session: Session) -> User:
    """``page_user`` for a route that authenticates in its own thread-pool call."""
    return _required(optional_user(request, session))


def _required(user: User | None) -> User:
    if user is None:
        raise LoginRequiredError("Log in to see this page.")
    return user


WebUser = Annotated[User | None, Depends(optional_user)]
PageUser = Annotated[User, Depends(page_user)]
CsrfChecked = Depends(csrf.verify)


@contextmanager
def rollback_on_error(session: Session) -> Iterator[None]:
    """Pages catch domain errors to re-render a form, and the request scope then commits:
    on an error the whole request's transaction is rolled back first, so a failed service
    call leaves nothing half-written (a failed form POST has nothing else to keep)."""
    try:
        yield
    except BaseException:
        session.rollback()
        raise
