"""Password hashing (argon2), API tokens and signed session cookies."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from backend.config import settings

if TYPE_CHECKING:
    from starlette.responses import Response

    from backend.models import User

_hasher = PasswordHasher()
TOKEN_PREFIX = "sa_"  # noqa: S105 - a prefix, not a secret


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    # Tokens are 256-bit random: a plain sha256 is the right lookup key (no salt needed).
    return hashlib.sha256(token.encode()).hexdigest()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt="syntharena-session")


def make_session_cookie(user_id: int, password_hash: str) -> str:
    # Binding a fragment of the password hash logs out every session on a password change.
    return _serializer().dumps({"uid": user_id, "pw": password_hash[-16:]})


def read_session_cookie(value: str) -> tuple[int, str] | None:
    try:
        data = _serializer().loads(value, max_age=settings.session_max_age_s)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
        return None
    return int(data["uid"]), str(data.get("pw", ""))


def set_session_cookie(response: Response, user: User) -> None:
    """Log ``user`` in on this response: the signed session cookie, HttpOnly and SameSite."""
    response.set_cookie(
        settings.session_cookie_name,
        make_session_cookie(user.id, user.password_hash),
        max_age=settings.session_max_age_s,
        httponly=True,
        samesite="lax",
        secure=settings.session_cookie_secure,
    )
