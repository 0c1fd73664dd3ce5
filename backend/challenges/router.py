from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from backend import access
from backend.challenges import service
from backend.challenges.schemas import (
    ChallengeIn,
    ChallengeOut,
    ChallengePatch,
    MemberIn,
    MemberOut,
    PhaseIn,
    PhaseOut,
    PhaseSettings,
)
from backend.db import SessionDep
from backend.deps import CurrentUser, OptionalUser, OrganizerUser
from backend.models import Challenge, Phase, User

router = APIRouter(prefix="/api/challenges", tags=["challenges"])


def _out(session: Session, challenge: Challenge, user: User | None) -> ChallengeOut:
    out = ChallengeOut.model_validate(challenge)
    out.my_role = access.role_in(session, user, challenge.id)
    return out


def phase_out(phase: Phase) -> PhaseOut:
    out = PhaseOut.model_validate(phase)
    out.accepting_submissions = service.accepting_reason(phase) is None
    return out


@router.get("")
def list_challenges(session: SessionDep, user: OptionalUser) -> list[ChallengeOut]:
    return [_out(session, c, user) for c in service.visible(session, user)]


@router.post("", status_code=201)
def create_challenge(data: ChallengeIn, session: SessionDep, user: CurrentUser) -> ChallengeOut:
    return _out(session, service.create_challenge(session, user, data), user)


@router.get("/{slug}")
def get_challenge(slug: str, session: SessionDep, user: OptionalUser) -> ChallengeOut:
    return _out(session, access.challenge_by_slug(session, slug, user), user)


@router.patch("/{slug}")
def update_challenge(
    slug: str, data: ChallengePatch, session: SessionDep, user: OrganizerUser
) -> ChallengeOut:
    challenge = access.challenge_by_slug(session, slug, user)
    return _out(session, service.update_challenge(session, user, challenge, data), user)


@router.post("/{slug}/register")
def register(slug: str, session: SessionDep, user: CurrentUser) -> MemberOut:
    challenge = access.challenge_by_slug(session, slug, user)
    member = service.register(session, user, challenge)
    return MemberOut(user_id=user.id, username=user.username, role=member.role)


@router.get("/{slug}/members")
def list_members(slug: str, session: SessionDep, user: OrganizerUser) -> list[MemberOut]:
    challenge = access.challenge_by_slug(session, slug, user)
    return [
        MemberOut(user_id=u.id, username=u.username, role=m.role)
        for m, u in service.members(session, user, challenge)
    ]


@router.put("/{slug}/members")
def set_member(slug: str, data: MemberIn, session: SessionDep, user: OrganizerUser) -> MemberOut:
    challenge = access.challenge_by_slug(session, slug, user)
    member, target = service.set_member(session, user, challenge, data)
    return MemberOut(user_id=target.id, username=target.username, role=member.role)


@router.get("/{slug}/phases")
def list_phases(slug: str, session: SessionDep, user: OptionalUser) -> list[PhaseOut]:
    challenge = access.challenge_by_slug(session, slug, user)
    return [phase_out(p) for p in service.phases_of(session, challenge.id)]


@router.post("/{slug}/phases", status_code=201)
def create_phase(slug: str, data: PhaseIn, session: SessionDep, user: OrganizerUser) -> PhaseOut:
    challenge = access.challenge_by_slug(session, slug, user)
    return phase_out(service.create_phase(session, user, challenge, data))


@router.get("/{slug}/phases/{phase_slug}")
def get_phase(slug: str, phase_slug: str, session: SessionDep, user: OptionalUser) -> PhaseOut:
    challenge = access.challenge_by_slug(session, slug, user)
    return phase_out(access.phase_by_slug(session, challenge, phase_slug))


@router.patch("/{slug}/phases/{phase_slug}")
def update_phase(
    slug: str, phase_slug: str, data: PhaseSettings, session: SessionDep, user: OrganizerUser
) -> PhaseOut:
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    return phase_out(service.update_phase(session, user, challenge, phase, data))
