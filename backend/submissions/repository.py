from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend.models import (
    ACTIVE_STATUSES,
    COUNTED_STATUSES,
    AggregateResult,
    Case,
    CaseRun,
    Result,
    Submission,
    User,
)


def lock_user(session: Session, user_id: int) -> None:
    """Serialises one user's submission attempts (limits stay exact under concurrency)."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())


def active_submission(session: Session, phase_id: int, user_id: int) -> Submission | None:
    return session.scalars(
        select(Submission).where(
            Submission.phase_id == phase_id,
            Submission.user_id == user_id,
            Submission.status.in_(ACTIVE_STATUSES),
        )
    ).first()


def counted_since(
    session: Session, phase_id: int, user_id: int, since: datetime | None
) -> list[datetime]:
    stmt = select(Submission.created_at).where(
        Submission.phase_id == phase_id,
        Submission.user_id == user_id,
        Submission.status.in_(COUNTED_STATUSES),
    )
    if since is not None:
        stmt = stmt.where(Submission.created_at > since)
    return list(session.scalars(stmt.order_by(Submission.created_at)).all())


def case_count(session: Session, dataset_version_id: int) -> int:
    stmt = select(func.count(Case.id)).where(Case.dataset_version_id == dataset_version_id)
    return int(session.scalar(stmt) or 0)


def of_phase(
    session: Session, phase_id: int, user_id: int | None
) -> Sequence[tuple[Submission, str]]:
    stmt = (
        select(Submission, User.username)
        .join(User, User.id == Submission.user_id)
        .where(Submission.phase_id == phase_id)
        .order_by(Submission.id.desc())
    )
    if user_id is not None:
        stmt = stmt.where(Submission.user_id == user_id)
    return [(s, u) for s, u in session.execute(stmt).all()]


def aggregate(session: Session, submission_id: int) -> AggregateResult | None:
    return session.scalars(
        select(AggregateResult).where(AggregateResult.submission_id == submission_id)
    ).one_or_none()


def case_runs(session: Session, submission_id: int) -> Sequence[tuple[CaseRun, str]]:
    rows = session.execute(
        select(CaseRun, Case.name)
        .join(Case, Case.id == CaseRun.case_id)
        .where(CaseRun.submission_id == submission_id)
        .order_by(Case.name)
    ).all()
    return [(r, n) for r, n in rows]


def case_metrics(session: Session, submission_id: int) -> dict[int, dict[str, object]]:
    rows = session.scalars(select(Result).where(Result.submission_id == submission_id)).all()
    return {r.case_id: r.metrics for r in rows}


def clear_evaluation(session: Session, submission_id: int) -> None:
    for model in (Result, AggregateResult, CaseRun):
        session.execute(delete(model).where(model.submission_id == submission_id))
