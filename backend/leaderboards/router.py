from __future__ import annotations

from fastapi import APIRouter, Response

from backend import access
from backend.db import SessionDep
from backend.deps import OptionalUser
from backend.leaderboards import service
from backend.leaderboards.schemas import Leaderboard

router = APIRouter(prefix="/api/challenges", tags=["leaderboards"])


@router.get("/{slug}/phases/{phase_slug}/leaderboard")
def leaderboard(slug: str, phase_slug: str, session: SessionDep, user: OptionalUser) -> (
    Leaderboard
):
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    return service.build(session, user, challenge, phase)


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
