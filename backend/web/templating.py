"""Jinja2 environment, filters and the one ``render`` helper every page uses."""

from __future__ import annotations

import math
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from sqlalchemy.orm import object_session
from starlette.datastructures import URL, URLPath
from starlette.responses import HTMLResponse

from backend import access
from backend.models import User, utcnow
from backend.web import csrf, flash
from backend.web.metrics_meta import metric_meta
from backend.web.plots import fmt

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend"
TEMPLATES_DIR = FRONTEND_DIR / "templates"
STATIC_DIR = FRONTEND_DIR / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    try:
        return fmt(float(value), digits)
    except (TypeError, ValueError):
        return str(value)


def _when(value: datetime | None) -> str:
    if value is None:
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "–"
    s = (utcnow() - value).total_seconds()
    if s < 0:
        return _left(value)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return "just now"


def _left(value: datetime | None) -> str:
    if value is None:
        return "no deadline"
    s = (value - utcnow()).total_seconds()
    if s <= 0:
        return "closed"
    d, h, m = int(s // 86400), int(s % 86400 // 3600), int(s % 3600 // 60)
    if d:
        return f"{d} d {h} h left"
    if h:
        return f"{h} h {m} min left"
    return f"{m} min left"


def _duration(seconds: float | int | None) -> str:
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "–"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.0f} h"
    return f"{s / 86400:.0f} d"


def _bytes(n: int | None) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _window(opens: datetime | None, closes: datetime | None) -> str:
    """A phase's submission window in words (was "now → no end")."""
    if opens and closes:
        return f"{_when(opens)} → {_when(closes)}"
    if opens:
        return f"from {_when(opens)}, no closing date"
    if closes:
        return f"until {_when(closes)}"
    return "no opening or closing date"


templates.env.globals["window"] = _window
templates.env.globals["metric_meta"] = metric_meta  # labels of per-case metric columns
templates.env.filters.update(
    number=_number, when=_when, ago=_ago, left=_left, duration=_duration, bytes=_bytes
)
templates.env.globals["now"] = utcnow

# id(router) -> (route name, parameters) -> its path; an entry goes with its router (tests
# make many apps; routers are not hashable)
_PATHS: dict[int, dict[tuple[str, tuple[tuple[str, Any], ...]], URLPath]] = {}


@pass_context
def _url_for(context: dict[str, Any], name: str, /, **params: Any) -> URL:
    """``request.url_for`` with the route's path kept per app: starlette looks it up by
    walking every route (~0.3 ms a call, six calls per page for the layout's static files)."""
    request: Request = context["request"]
    router = request.scope.get("router") or request.scope["app"]
    known = _PATHS.get(id(router))
    if known is None:
        known = _PATHS[id(router)] = {}
        weakref.finalize(router, _PATHS.pop, id(router), None)
    key = (name, tuple(sorted(params.items())))
    path = known.get(key)
    if path is None:
        path = known[key] = router.url_path_for(name, **params)
    return path.make_absolute_url(base_url=request.base_url)


templates.env.globals["url_for"] = _url_for


def organises_any(user: User | None) -> bool:
    """Whether the page header offers "Organise": admins and organisers of some challenge
    (participants only met 403s there). Asked in the user's own session; a user loaded by an
    error page's short session (now closed) is not shown the menu."""
    if user is None:
        return False
    session = object_session(user)
    if user.is_admin or session is None:
        return user.is_admin
    with session.no_autoflush:  # a page re-rendered after a failed form may hold bad state
        return access.organises_any(session, user)


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    user: User | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a page with the layout's context: user, CSRF token, flash messages."""
    token, new_cookie = csrf.token_for(request)
    messages = flash.pop(request)
    ctx: dict[str, Any] = {
        "user": user,
        "organiser": organises_any(user),
        "csrf_token": token,
        "messages": messages,
        **(context or {}),
    }
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    if new_cookie is not None:
        csrf.set_cookie(response, new_cookie)
    if messages:
        flash.clear(response)
    return response
