from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import AggregateResult, Submission, SubmissionStatus, User


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
