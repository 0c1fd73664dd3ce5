"""CSRF protection for cookie-session forms.

Each browser gets a random ``syntharena_csrf`` cookie; the token put in every page's forms is
an HMAC of that cookie and the session cookie, so it changes when the user logs in or out and
cannot be computed by another site. Every page POST must send it back (form field
``csrf_token`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request
from starlette.responses import Response

from backend.config import settings
from backend.errors import ForbiddenError

COOKIE = "syntharena_csrf"
FIELD = "csrf_token"
HEADER = "x-csrf-token"


def _sign(browser_secret: str, session_cookie: str) -> str:
    msg = f"csrf|{browser_secret}|{session_cookie}".encode()
    return hmac.new(settings.secret_key.encode(), msg, hashlib.sha256).hexdigest()


def token_for(request: Request) -> tuple[str, str | None]:
    """The token for this request's session, and a new cookie value to set if there was none."""
    browser_secret = request.cookies.get(COOKIE)
    new_cookie = None
    if not browser_secret:
        # Kept on the request so a second render in the same request agrees.
        browser_secret = getattr(request.state, "csrf_new_cookie", None) or secrets.token_urlsafe(
            32
        )
        request.state.csrf_new_cookie = browser_secret
        new_cookie = browser_secret
    session_cookie = request.cookies.get(settings.session_cookie_name, "")
    return _sign(browser_secret, session_cookie), new_cookie


def set_cookie(response: Response, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=settings.session_max_age_s,
        httponly=True,
        samesite="lax",
        secure=settings.session_cookie_secure,
    )


def is_valid(request: Request, submitted: str | None) -> bool:
    browser_secret = request.cookies.get(COOKIE)
    if not browser_secret or not submitted:
        return False
    expected = _sign(browser_secret, request.cookies.get(settings.session_cookie_name, ""))
    return hmac.compare_digest(expected, submitted)


async def verify(request: Request) -> None:
    """FastAPI dependency for every page POST."""
    submitted = request.headers.get(HEADER)
    if not submitted:
        form = await request.form()
        value = form.get(FIELD)
        submitted = value if isinstance(value, str) else None
    if not is_valid(request, submitted):
        raise ForbiddenError(
            "This form has expired or did not come from this site. Reload the page and try again."
        )
