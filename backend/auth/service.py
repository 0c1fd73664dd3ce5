from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.auth import identity
from backend.auth import repository as repo
from backend.auth.schemas import RegisterIn
from backend.config import settings
from backend.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
)
from backend.models import ApiToken, User, utcnow
from backend.security import hash_password, new_api_token, token_digest, verify_password


def register(session: Session, data: RegisterIn) -> User:
    if not settings.allow_registration:
        raise ForbiddenError("Registration is closed on this server; ask an administrator.")
    if repo.login_taken(session, data.email, data.username):
        raise ConflictError("That username or e-mail address is already registered; log in.")
    # data.email/username are normalised (RegisterIn), and so is settings.admin_emails: the
    # address that is stored is the one that is matched, byte for byte.
    user = User(
        email=data.email,
        username=data.username,
        password_hash=hash_password(data.password),
        is_admin=data.email in settings.admin_emails,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # registered at the same moment by another request
        raise ConflictError(
            "That username or e-mail address is already registered; log in."
        ) from exc
    return user


# Failed login times per account (or unknown login name), in this process: password guessing
# is slowed to settings.login_max_failures tries per settings.login_failure_window_s.
_failures: dict[str, deque[float]] = {}
_failures_lock = threading.Lock()


def _check_login_rate(key: str) -> None:
    now = time.monotonic()
    with _failures_lock:
        times = _failures.get(key)
        while times and now - times[0] > settings.login_failure_window_s:
            times.popleft()
        if times is not None and not times:
            del _failures[key]
        if times and len(times) >= settings.login_max_failures:
            wait = int(settings.login_failure_window_s - (now - times[0])) + 1
            raise TooManyRequestsError(
                f"Too many failed logins for this account; try again in {wait} s "
                "(or reset your password with an administrator)."
            )


def _record_login(key: str, ok: bool) -> None:
    with _failures_lock:
        if ok:
            _failures.pop(key, None)
        else:
            now = time.monotonic()
            if len(_failures) > 10_000:  # bounded memory under a spray of made-up names
                for k in [k for k, v in _failures.items()
                          if not v or now - v[-1] > settings.login_failure_window_s]:
                    del _failures[k]
            _failures.setdefault(key, deque()).append(now)


def authenticate(session: Session, login: str, password: str) -> User:
    """``login``: a username or e-mail address, normalised here. Failures count per account
    (whichever of its names was typed), or per name when no account has it."""
    try:
        name = identity.normalize_login(login)
    except identity.IdentifierError:
        raise UnauthorizedError("Wrong username or password.") from None
    user = repo.user_by_login(session, name)
    key = f"user:{user.id}" if user is not None else f"name:{name}"
    _check_login_rate(key)
    if user is None or not verify_password(user.password_hash, password):
        _record_login(key, False)
        raise UnauthorizedError("Wrong username or password.")
    _record_login(key, True)
    if not user.is_active:
        raise UnauthorizedError("This account is disabled.")
    return user


def create_token(
    session: Session, user: User, name: str, expires_in_days: int | None
) -> tuple[ApiToken, str]:
    secret = new_api_token()
    token = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=token_digest(secret),
        prefix=secret[:10],
        expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
    )
    session.add(token)
    session.flush()
    return token, secret


def list_tokens(session: Session, user: User) -> Sequence[ApiToken]:
    return repo.tokens_of(session, user.id)


def revoke_token(session: Session, user: User, token_id: int) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        raise NotFoundError(f"You have no API token {token_id}.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token
