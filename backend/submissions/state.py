"""Status changes of submissions and case runs, each a write under a row lock.

The worker calls these inside its own unit of work (``backend.db.session_scope``):

    with session_scope() as s:
        sub = transition(s, submission_id, SubmissionStatus.PENDING, SubmissionStatus.RUNNING)
        runs = ensure_case_runs(s, sub)

``StaleTransitionError`` means another actor already moved the row (a retry of a step that
already happened, or a cancel); the task should stop quietly. ``InvalidTransitionError`` is a bug.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from backend.config import settings
from backend.errors import ConflictError, NotFoundError
from backend.models import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    AggregateResult,
    Case,
    CaseRun,
    CaseRunStatus,
    Phase,
    Result,
    Submission,
    SubmissionStatus,
    utcnow,
)
from backend.text import clean_log_text


class InvalidTransitionError(ConflictError):
    """The state machine does not allow this change at all."""


class StaleTransitionError(ConflictError):
    """The row is not in the status the caller expected (someone else moved it)."""


def lock_submission(session: Session, submission_id: int) -> Submission:
    """Load a submission with ``SELECT … FOR UPDATE`` (held until the caller commits)."""
    sub = session.scalars(
        select(Submission)
        .where(Submission.id == submission_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if sub is None:
        raise NotFoundError(f"Submission {submission_id} does not exist.")
    return sub


def check_transition(current: SubmissionStatus, new: SubmissionStatus) -> None:
    if new not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransitionError(
            f"A submission cannot go from {current.value} to {new.value}."
        )


def transition(
    session: Session,
    submission_id: int,
    expected: SubmissionStatus | Collection[SubmissionStatus],
    new: SubmissionStatus,
    *,
    current_step: str | None = None,
    error_message: str | None = None,
) -> Submission:
    """Move a submission from ``expected`` to ``new`` under a row lock, or raise."""
    allowed_from = {expected} if isinstance(expected, SubmissionStatus) else set(expected)
    sub = lock_submission(session, submission_id)
    if sub.status not in allowed_from:
        raise StaleTransitionError(
            f"Submission {submission_id} is {sub.status.value}, expected "
            f"{', '.join(sorted(s.value for s in allowed_from))}."
        )
    check_transition(sub.status, new)
    now = utcnow()
    sub.status = new
    sub.status_changed_at = now
    if new is SubmissionStatus.RUNNING:
        sub.attempts += 1
        if sub.started_at is None:
            sub.started_at = now
    elif new is SubmissionStatus.PENDING:
        # Re-evaluation (or requeue): start over with clean progress.
        sub.error_message = ""
        sub.cases_done = 0
        sub.finished_at = None
        sub.started_at = None
    if new in TERMINAL_STATUSES:
        sub.finished_at = now
    if current_step is not None:
        sub.current_step = current_step
    if error_message is not None:
        sub.error_message = error_message
    session.flush()
    return sub


def update_progress(
    session: Session,
    submission_id: int,
    *,
    cases_done: int | None = None,
    cases_total: int | None = None,
    current_step: str | None = None,
) -> Submission:
    sub = lock_submission(session, submission_id)
    if cases_done is not None:
        sub.cases_done = cases_done
    if cases_total is not None:
        sub.cases_total = cases_total
    if current_step is not None:
        sub.current_step = current_step
    session.flush()
    return sub


def cases_of_submission(session: Session, submission: Submission) -> Sequence[Case]:
    phase = session.get(Phase, submission.phase_id)
    if phase is None or phase.dataset_version_id is None:
        return []
    return session.scalars(
        select(Case)
        .where(Case.dataset_version_id == phase.dataset_version_id)
        .order_by(Case.name)
    ).all()


def ensure_case_runs(session: Session, submission: Submission) -> list[CaseRun]:
    """One CaseRun per case of the phase's dataset version (idempotent), ordered by case."""
    cases = cases_of_submission(session, submission)
    existing = {
        r.case_id: r
        for r in session.scalars(
            select(CaseRun).where(CaseRun.submission_id == submission.id)
        ).all()
    }
    runs: list[CaseRun] = []
    for case in cases:
        run = existing.get(case.id)
        if run is None:
            run = CaseRun(submission_id=submission.id, case_id=case.id)
            session.add(run)
        runs.append(run)
    submission.cases_total = len(cases)
    session.flush()
    return runs


def lock_case_run(session: Session, case_run_id: int) -> CaseRun:
    run = session.scalars(
        select(CaseRun)
        .where(CaseRun.id == case_run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if run is None:
        raise NotFoundError(f"Case run {case_run_id} does not exist.")
    return run


def cap_log(text: str, limit: int | None = None) -> str:
    """Keep the tail of a log (the end is where the error is), with a marker when cut; NUL
    and other control characters replaced (PostgreSQL text cannot hold NUL)."""
    limit = settings.log_capture_bytes if limit is None else limit
    text = clean_log_text(text)
    data = text.encode("utf-8", errors="replace")
    if len(data) <= limit:
        return text
    tail = data[-limit:].decode("utf-8", errors="ignore")
    return f"[… {len(data) - limit} bytes cut …]\n{tail}"


def start_case_run(session: Session, case_run_id: int) -> CaseRun:
    run = lock_case_run(session, case_run_id)
    run.status = CaseRunStatus.RUNNING
    run.attempts += 1
    run.started_at = utcnow()
    run.finished_at = None
    session.flush()
    return run


def finish_case_run(
    session: Session,
    case_run_id: int,
    status: CaseRunStatus,
    *,
    exit_code: int | None = None,
    duration_s: float | None = None,
    stdout: str = "",
    stderr: str = "",
    error_message: str = "",
    prediction_path: str | None = None,
) -> CaseRun:
    run = lock_case_run(session, case_run_id)
    run.status = status
    run.exit_code = exit_code
    run.duration_s = duration_s
    run.stdout = cap_log(stdout)
    run.stderr = cap_log(stderr)
    run.error_message = error_message
    run.prediction_path = prediction_path
    run.finished_at = utcnow()
    session.flush()
    return run


def _upsert(session: Session, table: Any, values: dict[str, Any], keys: list[str],
            update: list[str]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = pg_insert(table).values(**values)
    else:
        stmt = sqlite_insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={k: stmt.excluded[k] for k in update}
    )
    session.execute(stmt)


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON (PostgreSQL rejects them): store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def record_case_result(
    session: Session, submission_id: int, case_id: int, metrics: dict[str, Any]
) -> None:
    """Insert or overwrite the metrics of one case (a retried step never duplicates)."""
    now = utcnow()
    _upsert(
        session,
        Result.__table__,
        {"submission_id": submission_id, "case_id": case_id, "metrics": json_safe(metrics),
         "created_at": now, "updated_at": now},
        ["submission_id", "case_id"],
        ["metrics", "updated_at"],
    )


def record_aggregate(
    session: Session,
    submission_id: int,
    metrics: dict[str, Any],
    statistics: dict[str, Any] | None = None,
    cases_scored: int = 0,
) -> None:
    now = utcnow()
    _upsert(
        session,
        AggregateResult.__table__,
        {"submission_id": submission_id, "metrics": json_safe(metrics),
         "statistics": json_safe(statistics or {}),
         "cases_scored": cases_scored, "created_at": now, "updated_at": now},
        ["submission_id"],
        ["metrics", "statistics", "cases_scored", "updated_at"],
    )
