from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session

from backend.models import (
    Challenge,
    ChallengeMember,
    ChallengeRole,
    Dataset,
    DatasetVersion,
    Phase,
    User,
)


def visible_challenges(session: Session, user: User | None) -> Sequence[Challenge]:
    stmt = select(Challenge).order_by(Challenge.id)
    if user is None:
        stmt = stmt.where(Challenge.is_public)
    elif not user.is_admin:
        member_of = select(ChallengeMember.challenge_id).where(ChallengeMember.user_id == user.id)
        stmt = stmt.where(or_(Challenge.is_public, Challenge.id.in_(member_of)))
    return session.scalars(stmt).all()


def slug_taken(session: Session, slug: str) -> bool:
    return session.scalars(select(Challenge.id).where(Challenge.slug == slug)).first() is not None


def membership(session: Session, challenge_id: int, user_id: int) -> ChallengeMember | None:
    return session.scalars(
        select(ChallengeMember).where(
            ChallengeMember.challenge_id == challenge_id, ChallengeMember.user_id == user_id
        )
    ).one_or_none()


def members(session: Session, challenge_id: int) -> Sequence[tuple[ChallengeMember, User]]:
    rows = session.execute(
        select(ChallengeMember, User)
        .join(User, User.id == ChallengeMember.user_id)
        .where(ChallengeMember.challenge_id == challenge_id)
        .order_by(ChallengeMember.role, User.username)
    ).all()
    return [(m, u) for m, u in rows]


def add_member(session: Session, challenge_id: int, user_id: int, role: ChallengeRole) -> None:
    session.add(ChallengeMember(challenge_id=challenge_id, user_id=user_id, role=role))


def phases(session: Session, challenge_id: int) -> Sequence[Phase]:
    return session.scalars(
        select(Phase).where(Phase.challenge_id == challenge_id).order_by(Phase.id)
    ).all()


def phase_slug_taken(session: Session, challenge_id: int, slug: str) -> bool:
    stmt = select(Phase.id).where(Phase.challenge_id == challenge_id, Phase.slug == slug)
    return session.scalars(stmt).first() is not None


def dataset_version(session: Session, dataset_slug: str, version: int | None) -> (
    tuple[Dataset, DatasetVersion | None] | None
):
    dataset = session.scalars(select(Dataset).where(Dataset.slug == dataset_slug)).one_or_none()
    if dataset is None:
        return None
    stmt = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
    if version is None:
        stmt = stmt.order_by(DatasetVersion.version.desc()).limit(1)
    else:
        stmt = stmt.where(DatasetVersion.version == version)
    return dataset, session.scalars(stmt).first()


def member_role(session: Session, user_id: int, challenge_id: int) -> ChallengeRole | None:
    return session.scalars(
        select(ChallengeMember.role).where(
            ChallengeMember.challenge_id == challenge_id, ChallengeMember.user_id == user_id
        )
    ).one_or_none()


def challenge_by_slug(session: Session, slug: str) -> Challenge | None:
    return session.scalars(select(Challenge).where(Challenge.slug == slug)).one_or_none()


def phase_by_slug(session: Session, challenge_id: int, phase_slug: str) -> Phase | None:
    return session.scalars(
        select(Phase).where(Phase.challenge_id == challenge_id, Phase.slug == phase_slug)
    ).one_or_none()


def organises_any(session: Session, user_id: int) -> bool:
    return bool(session.scalar(select(exists().where(
        ChallengeMember.user_id == user_id, ChallengeMember.role == ChallengeRole.ORGANIZER))))
