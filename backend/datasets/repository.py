from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import (
    Case,
    ChallengeMember,
    ChallengeRole,
    Dataset,
    DatasetVersion,
    ImportJob,
    ImportStatus,
    User,
)


def by_slug(session: Session, slug: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.slug == slug)).one_or_none()


def visible_to(session: Session, user: User) -> Sequence[Dataset]:
    stmt = select(Dataset).order_by(Dataset.id)
    if not user.is_admin:
        organised = select(ChallengeMember.challenge_id).where(
            ChallengeMember.user_id == user.id, ChallengeMember.role == ChallengeRole.ORGANIZER
        )
        stmt = stmt.where(Dataset.challenge_id.in_(organised))
    return session.scalars(stmt).all()


def versions(session: Session, dataset_id: int) -> Sequence[DatasetVersion]:
    return session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.version)
    ).all()


def lock_dataset(session: Session, dataset_id: int) -> None:
    session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update())


def next_version(session: Session, dataset_id: int) -> int:
    current = session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset_id)
    )
    return (current or 0) + 1


def version(session: Session, dataset_id: int, number: int) -> DatasetVersion | None:
    return session.scalars(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == number
        )
    ).one_or_none()


def cases(session: Session, dataset_version_id: int) -> Sequence[Case]:
    return session.scalars(
        select(Case).where(Case.dataset_version_id == dataset_version_id).order_by(Case.name)
    ).all()


def lock_job(session: Session, job_id: int) -> ImportJob | None:
    return session.scalars(
        select(ImportJob).where(ImportJob.id == job_id).with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def job(session: Session, dataset_id: int, job_id: int) -> ImportJob | None:
    return session.scalars(
        select(ImportJob).where(ImportJob.id == job_id, ImportJob.dataset_id == dataset_id)
    ).one_or_none()


def recent_jobs(session: Session, dataset_id: int, limit: int = 5) -> Sequence[ImportJob]:
    return session.scalars(
        select(ImportJob).where(ImportJob.dataset_id == dataset_id)
        .order_by(ImportJob.id.desc()).limit(limit)
    ).all()


def unmoved_jobs(session: Session, before: datetime) -> Sequence[ImportJob]:
    """Queued or running imports whose row has not changed since ``before``."""
    return session.scalars(
        select(ImportJob).where(
            ImportJob.status.in_([ImportStatus.QUEUED, ImportStatus.RUNNING]),
            ImportJob.updated_at < before,
        ).order_by(ImportJob.id)
    ).all()
