"""Submissions (with an explicit state machine), per-case container runs and results."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, TimestampMixin, str_enum


class SubmissionStatus(enum.StrEnum):
    PENDING = "pending"  # created, task enqueued after commit
    RUNNING = "running"  # worker loads the image and runs containers on the cases
    EVALUATING = "evaluating"  # predictions collected; metrics and aggregate being computed
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = SubmissionStatus
ACTIVE_STATUSES: frozenset[SubmissionStatus] = frozenset({S.PENDING, S.RUNNING, S.EVALUATING})
TERMINAL_STATUSES: frozenset[SubmissionStatus] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
# Statuses that use up the submission limit (failed and cancelled ones do not).
COUNTED_STATUSES: frozenset[SubmissionStatus] = ACTIVE_STATUSES | {S.SUCCEEDED}

# The only allowed status changes. RUNNING -> PENDING re-queues work after a lost worker;
# terminal -> PENDING is an organiser's re-evaluation.
ALLOWED_TRANSITIONS: dict[SubmissionStatus, frozenset[SubmissionStatus]] = {
    S.PENDING: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.EVALUATING, S.PENDING, S.FAILED, S.CANCELLED}),
    S.EVALUATING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset({S.PENDING}),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
}


class CaseRunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # non-zero exit, missing/invalid output
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


R = CaseRunStatus
TERMINAL_RUN_STATUSES: frozenset[CaseRunStatus] = frozenset(
    {R.SUCCEEDED, R.FAILED, R.TIMED_OUT, R.CANCELLED}
)
# The only allowed status changes of a case run. RUNNING -> PENDING gives a case back after an
# infrastructure fault or a lost worker (attempts are counted on -> RUNNING); SUCCEEDED ->
# FAILED is a synthetic CT that could not be scored. A re-evaluation deletes the runs.
CASE_RUN_TRANSITIONS: dict[CaseRunStatus, frozenset[CaseRunStatus]] = {
    R.PENDING: frozenset({R.RUNNING, R.FAILED, R.CANCELLED}),
    R.RUNNING: frozenset({R.PENDING, R.SUCCEEDED, R.FAILED, R.TIMED_OUT, R.CANCELLED}),
    R.SUCCEEDED: frozenset({R.FAILED}),
    R.FAILED: frozenset(),
    R.TIMED_OUT: frozenset(),
    R.CANCELLED: frozenset(),
}

IDEMPOTENCY_KEY_MAX = 128
_active_sql = "status IN ('pending', 'running', 'evaluating')"


class Submission(TimestampMixin, Base):
    __tablename__ = "submissions"
    __table_args__ = (
        # At most one active submission per user and phase, enforced by the database too.
        Index(
            "uq_submissions_one_active_per_user_phase",
            "phase_id",
            "user_id",
            unique=True,
            postgresql_where=text(_active_sql),
            sqlite_where=text(_active_sql),
        ),
        Index("ix_submissions_phase_id_user_id_created_at", "phase_id", "user_id", "created_at"),
        # A client's retry of a request whose answer it lost finds the submission it made.
        Index("uq_submissions_user_id_idempotency_key", "user_id", "idempotency_key",
              unique=True),
        CheckConstraint("cases_done >= 0", name="cases_done_nonneg"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    phase_id: Mapped[int] = mapped_column(ForeignKey("phases.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("algorithm_images.id", ondelete="RESTRICT"), index=True
    )
    status: Mapped[SubmissionStatus] = mapped_column(
        str_enum(SubmissionStatus, "submission_status"), default=SubmissionStatus.PENDING
    )
    status_changed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)  # incremented on each -> RUNNING
    # Progress, for status/watch.
    cases_total: Mapped[int] = mapped_column(default=0)
    cases_done: Mapped[int] = mapped_column(default=0)
    current_step: Mapped[str] = mapped_column(String(200), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    comment: Mapped[str] = mapped_column(String(500), default="")
    # The client's Idempotency-Key header (unique per user; NULL when none was sent).
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_MAX))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Organiser flags.
    is_hidden: Mapped[bool] = mapped_column(default=False)
    is_disqualified: Mapped[bool] = mapped_column(default=False)
    is_baseline: Mapped[bool] = mapped_column(default=False)


class CaseRun(TimestampMixin, Base):
    """One case of one submission through the sandbox."""

    __tablename__ = "case_runs"
    __table_args__ = (UniqueConstraint("submission_id", "case_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    status: Mapped[CaseRunStatus] = mapped_column(
        str_enum(CaseRunStatus, "case_run_status"), default=CaseRunStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(default=0)
    exit_code: Mapped[int | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    # Capped at settings.log_capture_bytes per stream (use backend.submissions.state.cap_log).
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    # Something the participant should know about a case that succeeded (e.g. the input's
    # geometry was imposed on the sCT under the phase's 'impose' geometry policy).
    warning: Mapped[str] = mapped_column(Text, default="", server_default="")
    # Synthetic CT written by the container, relative to data_dir (under predictions/).
    prediction_path: Mapped[str | None] = mapped_column(String(1000))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Result(TimestampMixin, Base):
    """Metrics of one case of one submission (unique: a retry overwrites, never duplicates)."""

    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("submission_id", "case_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), index=True
    )
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AggregateResult(TimestampMixin, Base):
    """The aggregate of a submission's case metrics, what the leaderboard ranks (one per
    submission)."""

    __tablename__ = "aggregate_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(
        ForeignKey("submissions.id", ondelete="CASCADE"), unique=True
    )
    # metric name -> the value ranked (e.g. the mean over cases); NaN/None = not available.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Whatever else the evaluator's aggregate returns (std, median, per-metric counts…).
    statistics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cases_scored: Mapped[int] = mapped_column(default=0)
