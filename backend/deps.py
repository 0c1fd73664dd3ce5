"""Authentication dependencies: ``CurrentUser``, ``OptionalUser``, ``AdminUser``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request

from backend.auth import repository as auth_repo
from backend.config import settings
from backend.db import SessionDep
from backend.errors import ForbiddenError, UnauthorizedError
from backend.models import User, utcnow
from backend.security import read_session_cookie, token_digest

TOKEN_USE_RESOLUTION = timedelta(minutes=1)  # how exactly a token's last use is recorded


def _user_from_request(request: Request, session: SessionDep) -> User | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()
        found = auth_repo.token_by_digest(session, token_digest(token))
        row, user = found if found is not None else (None, None)
        now = utcnow()
        if (
            row is None
            or row.revoked_at is not None
            or (row.expires_at is not None and row.expires_at <= now)
        ):
            raise UnauthorizedError(
                "This API token is invalid, expired or revoked. Run `syntharena login` again."
            )
        if user is None or not user.is_active:
            raise UnauthorizedError("This account is disabled.")
        # To the minute: a write on every request made concurrent reads with one token queue
        # on its row lock (and turned every GET into an UPDATE).
        if row.last_used_at is None or now - row.last_used_at >= TOKEN_USE_RESOLUTION:
            row.last_used_at = now
        return user
    cookie = request.cookies.get(settings.session_cookie_name)
    if cookie:
        _refuse_cross_site(request)
        parsed = read_session_cookie(cookie)
        if parsed is not None:
            user = session.get(User, parsed[0])
            if user is not None and user.is_active and user.password_hash[-16:] == parsed[1]:
                return user
    return None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refuse_cross_site(request: Request) -> None:
    """CSRF for the API's cookie sessions (page forms carry a token, see web/csrf.py): a
    state-changing request that a browser marks as coming from another site never acts with
    the session cookie. (SameSite=Lax stops most of these; Origin covers same-site hosts and
    older browsers.) Tokens in the Authorization header need no such check."""
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise ForbiddenError("Cross-site request refused: use the site itself or an API token.")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or origin.split("://", 1)[-1] != host:
            raise ForbiddenError(
                "Cross-site request refused: use the site itself or an API token."
            )


def optional_user(request: Request, session: SessionDep) -> User | None:
    return _user_from_request(request, session)


def current_user(request: Request, session: SessionDep) -> User:
    user = _user_from_request(request, session)
    if user is None:
        raise UnauthorizedError("Log in first (session cookie or `Authorization: Bearer <token>`).")
    return user


def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise ForbiddenError("Only site administrators may do this.")
    return user


def organizer_user(
    slug: str, session: SessionDep, user: Annotated[User, Depends(current_user)]
) -> User:
    """For routes under /api/challenges/{slug}: an organiser of that challenge (or admin)."""
    from backend import access

    access.require_organizer(session, user, access.challenge_by_slug(session, slug, user))
    return user


OptionalUser = Annotated[User | None, Depends(optional_user)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]
OrganizerUser = Annotated[User, Depends(organizer_user)]


def current_user_short(request: Request) -> User:
    """Authenticate in a short transaction of its own, for long streaming requests (uploads)
    that must not keep a transaction (or the token row lock) open while bytes arrive."""
    from backend.db import session_scope

    with session_scope() as session:
        user = _user_from_request(request, session)
        if user is None:
            raise UnauthorizedError(
                "Log in first (session cookie or `Authorization: Bearer <token>`)."
            )
        session.expunge(user)
    return user


StreamingUser = Annotated[User, Depends(current_user_short)]
