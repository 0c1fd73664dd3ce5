"""Who may see and do what in a challenge. Site admins may do everything."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.errors import ForbiddenError, NotFoundError
from backend.models import Challenge, ChallengeMember, ChallengeRole, Phase, User


def role_in(session: Session, user: User | None, challenge_id: int) -> ChallengeRole | None:
    if user is None:
        return None
    return session.scalars(
        select(ChallengeMember.role).where(
            ChallengeMember.challenge_id == challenge_id, ChallengeMember.user_id == user.id
        )
    ).one_or_none()


def is_organizer(session: Session, user: User | None, challenge_id: int) -> bool:
    if user is None:
        return False
    return user.is_admin or role_in(session, user, challenge_id) is ChallengeRole.ORGANIZER


def can_view(session: Session, user: User | None, challenge: Challenge) -> bool:
    if challenge.is_public:
        return True
    return user is not None and (user.is_admin or role_in(session, user, challenge.id) is not None)


def challenge_by_slug(session: Session, slug: str, user: User | None) -> Challenge:
    challenge = session.scalars(select(Challenge).where(Challenge.slug == slug)).one_or_none()
    # A private challenge is "not found" to outsiders: its existence is not revealed.
    if challenge is None or not can_view(session, user, challenge):
        raise NotFoundError(f"There is no challenge '{slug}'.")
    return challenge


def require_organizer(session: Session, user: User, challenge: Challenge) -> None:
    if not is_organizer(session, user, challenge.id):
        raise ForbiddenError(f"Only organisers of '{challenge.slug}' may do this.")


def phase_by_slug(session: Session, challenge: Challenge, phase_slug: str) -> Phase:
    phase = session.scalars(
        select(Phase).where(Phase.challenge_id == challenge.id, Phase.slug == phase_slug)
    ).one_or_none()
    if phase is None:
        raise NotFoundError(f"Challenge '{challenge.slug}' has no phase '{phase_slug}'.")
    return phase
