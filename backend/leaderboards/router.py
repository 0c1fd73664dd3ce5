from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from backend import access
from backend.db import SessionDep
from backend.deps import OptionalUser
from backend.leaderboards import service
from backend.leaderboards.schemas import Leaderboard

router = APIRouter(prefix="/api/challenges", tags=["leaderboards"])

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def _matches(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return any(t.strip().removeprefix("W/") in (etag, "*") for t in wanted.split(","))


@router.get("/{slug}/phases/{phase_slug}/leaderboard", response_model=Leaderboard)
def leaderboard(
    request: Request, slug: str, phase_slug: str, session: SessionDep, user: OptionalUser,
    offset: Annotated[int, Query(ge=0, description="Rows to skip (ranked order)")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page")] =
    DEFAULT_LIMIT,
) -> Response:
    """A page of the stored leaderboard (``total`` rows in all). Answers 304 to a matching
    ``If-None-Match``: the ETag changes only when the leaderboard does."""
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    found = service.board(session, user, challenge, phase)
    etag = f'"{found.etag}-{offset}-{limit}"'
    # Hidden leaderboards are for organisers only: no shared cache may keep them.
    headers = {"ETag": etag,
               "Cache-Control": ("public" if phase.leaderboard_public else "private")
               + ", no-cache"}
    if _matches(request, etag):
        return Response(status_code=304, headers=headers)
    body = service.to_schema(challenge, phase, found, offset, limit).model_dump_json()
    return Response(body, media_type="application/json", headers=headers)


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
