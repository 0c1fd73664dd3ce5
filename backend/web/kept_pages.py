"""Rendered pages kept in this process, served again without rendering: a kept page has a
placeholder where the layout's CSRF token goes (the token differs per browser session, the
page does not), filled in per request. ``leaderboard_page`` keeps the anonymous
everyone-page this way, the submission page a viewer's own page (``backend.kept``)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import HTMLResponse, Response

from backend import kept
from backend.web import csrf

TOKEN_SLOT = b"\x00csrf-token\x00"  # cannot occur in a rendered page (no NUL bytes)


def slotted(request: Request, response: Response) -> bytes:
    """The rendered body with this request's CSRF token replaced by the placeholder."""
    token, _ = csrf.token_for(request)
    return bytes(response.body).replace(token.encode(), TOKEN_SLOT)


def with_token(request: Request, body: bytes, headers: dict[str, str] | None = None) -> Response:
    """A kept page for this request: its CSRF token filled in (and the cookie set when the
    browser had none)."""
    token, new_cookie = csrf.token_for(request)
    response = HTMLResponse(body.replace(TOKEN_SLOT, token.encode()), headers=headers)
    if new_cookie is not None:
        csrf.set_cookie(response, new_cookie)
    return response


def validator(request: Request, state: tuple[object, ...]) -> str:
    """The ETag of a viewer's page: its state and this session's CSRF token (in the page)."""
    token, _ = csrf.token_for(request)
    return kept.etag(state, token)
