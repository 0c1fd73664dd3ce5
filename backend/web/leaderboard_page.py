"""The leaderboard page. An anonymous visitor's view of a public leaderboard is the same page
for everyone but for the CSRF token of the layout's forms: it is kept rendered per process
(with a placeholder where the token goes) and served without a thread or a database
connection while the database confirmed it within ``leaderboard_cache_s`` — the page the
crowd reloads before a deadline. Everyone else's view is built per request from the stored
leaderboard (``leaderboard_view``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from backend import access
from backend.config import settings
from backend.db import in_request_session
from backend.deps import optional_user
from backend.leaderboards import cache
from backend.leaderboards import service as leaderboards_service
from backend.web import flash, kept_pages, leaderboard_view
from backend.web.templating import render

router = APIRouter(include_in_schema=False)


def _anonymous(request: Request) -> bool:
    """No credentials, no flash message, not an HTMX partial: the everyone-page."""
    return ("authorization" not in request.headers and "hx-request" not in request.headers
            and settings.session_cookie_name not in request.cookies
            and flash.COOKIE not in request.cookies)


def _key(request: Request) -> cache.PageKey:
    return ("html", request.url.path, request.url.query)


def _confirm_or_build(request: Request, session: Session, slug: str, phase_slug: str,
                      sort: str, direction: str, page: int, per_page: int,
                      anonymous: bool) -> Response:
    """An anonymous visitor's kept page whose leaderboard version the database confirms is
    served again (and counts as confirmed) without rendering; otherwise the page is built,
    and kept when it is the everyone-page of a public leaderboard."""
    user = optional_user(request, session)
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    etag = None
    if anonymous and user is None and phase.leaderboard_public \
            and access.can_view(session, None, challenge):
        # the version asked before building: a page built from a newer one is rebuilt at
        # its next confirmation, never kept under a version it does not show
        etag = leaderboards_service.stored(session, phase.id).etag
        kept = cache.body(_key(request), etag)
        if kept is not None:
            cache.remember_page(_key(request), phase.id, etag, kept)
            return kept_pages.with_token(request, kept)
    lb = leaderboard_view.build(session, user, challenge, phase, sort, direction, page,
                                per_page)
    response = render(request, "leaderboard.html",
                      {"challenge": challenge, "phase": phase, "lb": lb}, user=user)
    if etag is not None:
        cache.remember_page(_key(request), phase.id, etag, kept_pages.slotted(request, response))
    return response


@router.get("/challenges/{slug}/{phase_slug}/leaderboard")
async def leaderboard_page(
    request: Request,
    slug: str,
    phase_slug: str,
    sort: str = "rank",
    dir: str = "asc",
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=leaderboard_view.MAX_PER_PAGE)] =
    leaderboard_view.DEFAULT_PER_PAGE,
) -> Response:
    anonymous = _anonymous(request)
    if anonymous:
        kept = cache.page(_key(request), settings.leaderboard_cache_s)
        if kept is not None:
            return kept_pages.with_token(request, kept.body)
    try:
        return await in_request_session(
            lambda s: _confirm_or_build(request, s, slug, phase_slug, sort, dir, page,
                                        per_page, anonymous))
    finally:
        if anonymous:  # this request may hold the claim to confirm the kept page
            cache.release(_key(request))
