"""Participant pages: challenge list, challenge overview, phase page, joining a challenge."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from backend import access
from backend.challenges import service as challenges_service
from backend.config import settings
from backend.db import SessionDep
from backend.web import flash, views
from backend.web.deps import CsrfChecked, PageUser, WebUser
from backend.web.templating import render

router = APIRouter(include_in_schema=False)

# The chunked upload API of backend/images/router.py, as upload.js calls it.
UPLOAD_URLS = {
    "create": "/api/images/uploads",
    "upload": "/api/images/uploads/{id}",
    "complete": "/api/images/uploads/{id}/complete",
}


@router.get("/")
def home(request: Request, session: SessionDep, user: WebUser) -> Response:
    challenges = challenges_service.visible(session, user)
    cards = [
        views.challenge_card(session, challenge, user) for challenge in challenges
    ]
    return render(request, "home.html", {"cards": cards}, user=user)


@router.get("/challenges/{slug}")
def challenge_page(request: Request, slug: str, session: SessionDep, user: WebUser) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    phases = [views.phase_info(session, p, user) for p in challenges_service.phases_of(session,
                                                                              challenge.id)]
    return render(
        request,
        "challenge.html",
        {
            "challenge": challenge,
            "phases": phases,
            "role": access.role_in(session, user, challenge.id),
            "is_organizer": access.is_organizer(session, user, challenge.id),
        },
        user=user,
    )


@router.post("/challenges/{slug}/join", dependencies=[CsrfChecked])
def join(slug: str, session: SessionDep, user: PageUser) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    challenges_service.register(session, user, challenge)
    response = RedirectResponse(f"/challenges/{slug}", status_code=303)
    flash.add(response, f"You joined {challenge.title}. Upload your algorithm in a phase.")
    return response


@router.get("/challenges/{slug}/{phase_slug}")
def phase_page(
    request: Request, slug: str, phase_slug: str, session: SessionDep, user: WebUser
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    info = views.phase_info(session, phase, user)
    return render(
        request,
        "phase.html",
        {
            "challenge": challenge,
            "phase": phase,
            "info": info,
            "role": access.role_in(session, user, challenge.id),
            "is_organizer": access.is_organizer(session, user, challenge.id),
            "mine": views.my_submissions(session, user, phase) if user else [],
            "images": views.my_valid_images(session, user) if user else [],
            "quota": views.quota(session, user, phase) if user else None,
            "upload_urls": UPLOAD_URLS,
            "max_image_bytes": settings.max_image_bytes,
        },
        user=user,
    )
