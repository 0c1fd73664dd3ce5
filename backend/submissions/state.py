"""The two state machines: status changes of submissions and of case runs, each a write under a
row lock, checked against the allowed transitions (``backend.models``), attempts counted.

Only ``backend.submissions.pipeline`` and the submissions service call these, inside their unit
of work (``backend.db.session_scope`` or the request's session):

    sub = transition(s, submission_id, SubmissionStatus.PENDING, SubmissionStatus.RUNNING)
    run = move_case_run(s, run_id, CaseRunStatus.RUNNING)

``StaleTransitionError`` means another actor already moved the row (a retry of a step that
already happened, or a cancel); the task should stop quietly. ``InvalidTransitionError`` is a bug.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy.orm import Session

from backend.config import settings
from backend.errors import ConflictError
from backend.models import (
    ALLOWED_TRANSITIONS,
    CASE_RUN_TRANSITIONS,
    TERMINAL_RUN_STATUSES,
    TERMINAL_STATUSES,
    CaseRun,
    CaseRunStatus,
    Submission,
    SubmissionStatus,
    utcnow,
)
from backend.submissions import repository as repo
from backend.text import clean_log_text

# Row locks (``SELECT … FOR UPDATE``, held until the caller commits).
lock_submission = repo.lock_submission
lock_case_run = repo.lock_case_run


class InvalidTransitionError(ConflictError):
    """The state machine does not allow this change at all."""


class StaleTransitionError(ConflictError):
    """The row is not in the status the caller expected (someone else moved it)."""


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
    # Messages may echo what an algorithm wrote (a file name, a header value): storable text.
    if current_step is not None:
        sub.current_step = clean_log_text(current_step)[:200]
    if error_message is not None:
        sub.error_message = clean_log_text(error_message)
    session.flush()
    return sub


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


def move_case_run(
    session: Session,
    case_run_id: int,
    new: CaseRunStatus,
    *,
    error_message: str | None = None,
    exit_code: int | None = None,
    duration_s: float | None = None,
    stdout: str | None = None,
    stderr: str | None = None,
    prediction_path: str | None = None,
    warning: str | None = None,
) -> CaseRun:
    """Every status write of a case run: under its row lock, checked against
    ``CASE_RUN_TRANSITIONS``. -> RUNNING counts an attempt; a terminal status records the
    container's outcome (logs capped)."""
    run = lock_case_run(session, case_run_id)
    previous = run.status
    if new not in CASE_RUN_TRANSITIONS[previous]:
        raise InvalidTransitionError(
            f"Case run {case_run_id} cannot go from {previous.value} to {new.value}."
        )
    run.status = new
    if new is CaseRunStatus.RUNNING:
        run.attempts += 1
        run.started_at = utcnow()
        run.finished_at = None
    elif new in TERMINAL_RUN_STATUSES:
        run.finished_at = utcnow()
        if previous is CaseRunStatus.RUNNING:  # the container's record (not a scoring failure)
            run.exit_code = exit_code
            run.duration_s = duration_s
            run.stdout = cap_log(stdout or "")
            run.stderr = cap_log(stderr or "")
            run.prediction_path = prediction_path
            run.warning = clean_log_text(warning or "")
    if error_message is not None:
        run.error_message = clean_log_text(error_message)
    session.flush()
    return run
