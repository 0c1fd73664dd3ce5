from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from backend import access, kept
from backend.db import SessionDep, in_request_session
from backend.deps import OptionalUser, optional_user
from backend.leaderboards import service
from backend.leaderboards.schemas import Leaderboard

router = APIRouter(prefix="/api/challenges", tags=["leaderboards"])

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def _read(request: Request, session: Session, slug: str, phase_slug: str, offset: int,
          limit: int) -> service.JsonPage:
    user = optional_user(request, session)
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    return service.json_page(session, user, challenge, phase, offset, limit)


@router.get("/{slug}/phases/{phase_slug}/leaderboard", response_model=Leaderboard)
async def leaderboard(
    request: Request, slug: str, phase_slug: str,
    offset: Annotated[int, Query(ge=0, description="Rows to skip (ranked order)")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page")] =
    DEFAULT_LIMIT,
) -> Response:
    """A page of the stored leaderboard (``total`` rows in all). Answers 304 to a matching
    ``If-None-Match``: the ETag changes only when the leaderboard does.

    Async on purpose: an anonymous read of a public leaderboard recently confirmed by the
    database is served from memory, without a thread or a connection (the hot path in the
    last hour before a deadline); everything else reads it in a request's session."""
    page = None
    anonymous = "authorization" not in request.headers
    if anonymous:
        page = service.cached_page(slug, phase_slug, offset, limit)
    if page is None:
        try:
            page = await in_request_session(
                lambda s: _read(request, s, slug, phase_slug, offset, limit))
        finally:
            if anonymous:  # this request may hold the claim to confirm the kept page
                service.release_cached_page(slug, phase_slug, offset, limit)
    # Hidden leaderboards are for organisers only: no shared cache may keep them.
    headers = {"ETag": page.etag,
               "Cache-Control": ("public" if page.public else "private") + ", no-cache"}
    if kept.not_modified(request, page.etag):
        return Response(status_code=304, headers=headers)
    return Response(page.body, media_type="application/json", headers=headers)


@router.get("/{slug}/phases/{phase_slug}/leaderboard.csv", response_class=Response)
def leaderboard_csv(slug: str, phase_slug: str, session: SessionDep, user: OptionalUser) -> (
    Response
):
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    body = service.to_csv(service.build(session, user, challenge, phase))
    return Response(
        body,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{slug}-{phase_slug}.csv"'},
    )
