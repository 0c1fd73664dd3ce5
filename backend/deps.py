"""Authentication dependencies: ``CurrentUser``, ``OptionalUser``, ``AdminUser``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request

from backend.auth import repository as auth_repo
from backend.config import settings
from backend.db import SessionDep
from backend.errors import ForbiddenError, UnauthorizedError
from backend.models import User, utcnow
from backend.security import read_session_cookie, token_digest

TOKEN_USE_RESOLUTION = timedelta(minutes=1)  # how exactly a token's last use is recorded


def bearer_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def token_live(revoked_at: datetime | None, expires_at: datetime | None,
               now: datetime) -> bool:
    return revoked_at is None and (expires_at is None or expires_at > now)


def token_use_due(last_used_at: datetime | None, now: datetime) -> bool:
    """Whether a request with the token records its use. To the minute: a write on every
    request made concurrent reads with one token queue on its row lock (and turned every GET
    into an UPDATE)."""
    return last_used_at is None or now - last_used_at >= TOKEN_USE_RESOLUTION


def session_user_id(request: Request) -> tuple[int, str] | None:
    """(user id, password-hash tail) of the request's session cookie, if it has a valid one."""
    cookie = request.cookies.get(settings.session_cookie_name)
    return read_session_cookie(cookie) if cookie else None


def session_matches(is_active: bool, password_hash: str, tail: str) -> bool:
    """A session cookie holds while its user is active and has the password it was made
    under (a password change logs every session out)."""
    return is_active and password_hash[-16:] == tail


def _user_from_request(request: Request, session: SessionDep) -> User | None:
    token = bearer_token(request)
    if token is not None:
        found = auth_repo.token_by_digest(session, token_digest(token))
        row, user = found if found is not None else (None, None)
        now = utcnow()
        if row is None or not token_live(row.revoked_at, row.expires_at, now):
            raise UnauthorizedError(
                "This API token is invalid, expired or revoked. Run `syntharena login` again."
            )
        if user is None or not user.is_active:
            raise UnauthorizedError("This account is disabled.")
        if token_use_due(row.last_used_at, now):
            row.last_used_at = now
        return user
    if request.cookies.get(settings.session_cookie_name):
        _refuse_cross_site(request)
        parsed = session_user_id(request)
        if parsed is not None:
            user = session.get(User, parsed[0])
            if user is not None and session_matches(user.is_active, user.password_hash,
                                                    parsed[1]):
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
