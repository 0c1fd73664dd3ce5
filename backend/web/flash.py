"""One-shot messages shown on the next page (a signed cookie, no server-side store)."""

from __future__ import annotations

from typing import Literal

from fastapi import Request
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.responses import Response

from backend.config import settings

COOKIE = "syntharena_flash"
Kind = Literal["ok", "error", "info"]


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key, salt="syntharena-flash")


def add(response: Response, message: str, kind: Kind = "ok") -> None:
    response.set_cookie(
        COOKIE,
        _serializer().dumps([[kind, message[:500]]]),
        max_age=300,
        httponly=True,
        samesite="lax",
        secure=settings.session_cookie_secure,
    )


def pop(request: Request) -> list[tuple[str, str]]:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return []
    try:
        data = _serializer().loads(raw)
    except BadSignature:
        return []
    if not isinstance(data, list):
        return []
    return [(str(k), str(m)) for k, m in data if isinstance(m, str)]


def clear(response: Response) -> None:
    response.delete_cookie(COOKIE)
