from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import AggregateResult, Result, Submission, SubmissionStatus, User


def scored_submissions(
    session: Session, phase_id: int
) -> Sequence[tuple[Submission, str, AggregateResult]]:
    rows = session.execute(
        select(Submission, User.username, AggregateResult)
        .join(User, User.id == Submission.user_id)
        .join(AggregateResult, AggregateResult.submission_id == Submission.id)
        .where(
            Submission.phase_id == phase_id,
            Submission.status == SubmissionStatus.SUCCEEDED,
            Submission.is_hidden.is_(False),
        )
        .order_by(Submission.created_at, Submission.id)
    ).all()
    return [(s, u, a) for s, u, a in rows]


def case_metrics(
    session: Session, submission_ids: Sequence[int]
) -> dict[int, dict[int, dict[str, object]]]:
    """submission id -> case id -> stored per-case metrics, for the given submissions."""
    out: dict[int, dict[int, dict[str, object]]] = {s: {} for s in submission_ids}
    if not submission_ids:
        return out
    rows = session.execute(
        select(Result.submission_id, Result.case_id, Result.metrics)
        .where(Result.submission_id.in_(submission_ids))
        .order_by(Result.submission_id, Result.case_id)
    ).all()
    for sub_id, case_id, metrics in rows:
        out[sub_id][case_id] = dict(metrics)
    return out
