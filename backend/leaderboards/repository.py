"""All SQL of the leaderboards: what a recomputation reads, and the stored snapshot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.models import Phase, User, utcnow
from backend.models.leaderboards import LeaderboardSnapshot
from backend.models.submissions import AggregateResult, Result, Submission, SubmissionStatus


@dataclass(frozen=True)
class Entry:
    """What the leaderboard needs of one scored submission (no ORM objects: a recomputation
    at thousands of submissions is dominated by loading them)."""

    submission_id: int
    user_id: int
    username: str
    created_at: datetime
    comment: str
    is_baseline: bool
    is_disqualified: bool
    metrics: dict[str, Any]
    cases_scored: int


def _counted(phase_id: int) -> Any:
    return (Submission.phase_id == phase_id, Submission.status == SubmissionStatus.SUCCEEDED,
            Submission.is_hidden.is_(False))


def scored_submissions(session: Session, phase_id: int) -> list[Entry]:
    rows = session.execute(
        select(Submission.id, Submission.user_id, User.username, Submission.created_at,
               Submission.comment, Submission.is_baseline, Submission.is_disqualified,
               AggregateResult.metrics, AggregateResult.cases_scored)
        .join(User, User.id == Submission.user_id)
        .join(AggregateResult, AggregateResult.submission_id == Submission.id)
        .where(*_counted(phase_id))
        .order_by(Submission.created_at, Submission.id)
    ).all()
    return [Entry(*row) for row in rows]


def case_metrics(session: Session, submission_ids: Sequence[int]) -> dict[int, dict[int, Any]]:
    """submission id -> case id -> metrics, for the bootstrap over the ranked rows."""
    ids = list(submission_ids)
    out: dict[int, dict[int, Any]] = {int(s): {} for s in ids}
    for start in range(0, len(ids), 5000):
        rows = session.execute(
            select(Result.submission_id, Result.case_id, Result.metrics)
            .where(Result.submission_id.in_(ids[start:start + 5000]))
        ).all()
        for sub_id, case_id, metrics in rows:
            out.setdefault(int(sub_id), {})[int(case_id)] = metrics or {}
    return out


def bump_version(session: Session, phase_id: int) -> None:
    session.execute(
        update(Phase).where(Phase.id == phase_id)
        .values(leaderboard_version=Phase.leaderboard_version + 1)
        .execution_options(synchronize_session="fetch")
    )


@dataclass(frozen=True)
class SnapshotState:
    phase_version: int
    version: int | None  # None: no snapshot row
    etag: str


def snapshot_state(session: Session, phase_id: int) -> SnapshotState | None:
    """The phase's leaderboard version and its snapshot's, one indexed query (no document)."""
    row = session.execute(
        select(Phase.leaderboard_version, LeaderboardSnapshot.version, LeaderboardSnapshot.etag)
        .outerjoin(LeaderboardSnapshot, LeaderboardSnapshot.phase_id == Phase.id)
        .where(Phase.id == phase_id)
    ).first()
    if row is None:
        return None
    return SnapshotState(int(row[0]), None if row[1] is None else int(row[1]), row[2] or "")


def document(session: Session, phase_id: int) -> tuple[str, dict[str, Any]] | None:
    row = session.execute(
        select(LeaderboardSnapshot.etag, LeaderboardSnapshot.document)
        .where(LeaderboardSnapshot.phase_id == phase_id)
    ).first()
    return None if row is None else (row[0], row[1])


def lock_snapshot(session: Session, phase_id: int) -> LeaderboardSnapshot:
    """The phase's snapshot row, created if missing and locked until the transaction ends, so
    recomputations of one phase serialise (PostgreSQL: the row lock; SQLite: the insert
    takes the database's write lock)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(
        dialect.insert(LeaderboardSnapshot)
        .values(phase_id=phase_id, version=-1, etag="", document={}, computed_at=utcnow())
        .on_conflict_do_nothing(index_elements=["phase_id"])
    )
    return session.execute(
        select(LeaderboardSnapshot).where(LeaderboardSnapshot.phase_id == phase_id)
        .with_for_update().execution_options(populate_existing=True)
    ).scalar_one()


def phase_version(session: Session, phase_id: int) -> int:
    return int(session.execute(
        select(Phase.leaderboard_version).where(Phase.id == phase_id)
    ).scalar_one())
