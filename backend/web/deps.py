"""Dependencies of the page routes: the (optional) user from the session cookie, CSRF."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backend.deps import optional_user
from backend.errors import UnauthorizedError
from backend.models import User
from backend.web import csrf


class LoginRequired(UnauthorizedError):
    """Rendered as a redirect to the login page (with ``next``) by the page error handler."""


def page_user(request: Request, user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise LoginRequired("Log in to see this page.")
    return user


WebUser = Annotated[User | None, Depends(optional_user)]
PageUser = Annotated[User, Depends(page_user)]
CsrfChecked = Depends(csrf.verify)
