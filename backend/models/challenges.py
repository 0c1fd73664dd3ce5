"""Challenges and their phases (every evaluation and leaderboard setting lives on Phase)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, TimestampMixin, str_enum


class PhaseKind(enum.StrEnum):
    DEBUG = "debug"
    VALIDATION = "validation"
    TEST = "test"


class RankingMethod(enum.StrEnum):
    ABSOLUTE = "absolute"  # order by the primary metric
    MEAN_RANK = "mean_rank"  # mean of per-metric ranks (ties share a rank)
    MEDIAN_RANK = "median_rank"
    NORMALIZED_SUM = "normalized_sum"  # SynthRAD2023: sum of min-max normalised means
    GROUPED_NORMALIZED_SUM = "grouped_normalized_sum"  # SynthRAD2025: metric groups weigh equally


class CasePolicy(enum.StrEnum):
    """What a case without a valid sCT (or a metric that failed) does to a submission."""

    FAIL = "fail"  # the submission fails unless every case is scored (test phases' default)
    WORST = "worst"  # the case takes the organiser's penalty, else the phase's worst value


class GeometryPolicy(enum.StrEnum):
    """What a synthetic CT whose geometry differs from the input's does to its case."""

    REJECT = "reject"  # the case fails, saying what differs (default)
    # Same size: the input's spacing, origin and direction are imposed and the case carries a
    # warning (SynthRAD's official evaluation imposes them silently). Another size fails.
    IMPOSE = "impose"


class SubmissionSelection(enum.StrEnum):
    """Which of a user's submissions represents them on the leaderboard."""

    BEST = "best"
    LATEST = "latest"


class Challenge(TimestampMixin, Base):
    __tablename__ = "challenges"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    is_public: Mapped[bool] = mapped_column(default=True)  # listed and open for registration
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


DEFAULT_SUBMISSION_PERIOD_S = 24 * 3600


class Phase(TimestampMixin, Base):
    __tablename__ = "phases"
    __table_args__ = (
        UniqueConstraint("challenge_id", "slug"),
        CheckConstraint("submissions_per_period >= 0", name="submissions_per_period_nonneg"),
        CheckConstraint("case_time_limit_s > 0", name="case_time_limit_positive"),
        CheckConstraint("memory_mb > 0", name="memory_positive"),
        CheckConstraint("cpus > 0", name="cpus_positive"),
        CheckConstraint("batch_size >= 1", name="batch_size_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(
        ForeignKey("challenges.id", ondelete="CASCADE"), index=True
    )
    slug: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    kind: Mapped[PhaseKind] = mapped_column(str_enum(PhaseKind, "phase_kind"))
    # The hidden cases this phase evaluates on.
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="RESTRICT"), index=True
    )

    # Submission window: the phase must be open AND now inside [opens_at, closes_at).
    is_open: Mapped[bool] = mapped_column(default=False)
    opens_at: Mapped[datetime | None]
    closes_at: Mapped[datetime | None]
    # Limit per user per rolling period; period None = the whole phase. Failed don't count.
    submissions_per_period: Mapped[int] = mapped_column(default=3)
    # NULL means "the whole phase". No column default: SQLAlchemy would fill a default in for
    # an explicit None at INSERT time; services set DEFAULT_SUBMISSION_PERIOD_S instead.
    submission_period_s: Mapped[int | None] = mapped_column()

    # Sandbox settings for each container run.
    case_time_limit_s: Mapped[int] = mapped_column(default=600)
    memory_mb: Mapped[int] = mapped_column(default=8192)
    cpus: Mapped[float] = mapped_column(default=2.0)
    gpu_required: Mapped[bool] = mapped_column(default=False)
    batch_size: Mapped[int] = mapped_column(default=1)  # cases per container run

    # Scoring and ranking.
    metric_profile: Mapped[str] = mapped_column(String(32), default="synthrad2023")
    ranking_method: Mapped[RankingMethod] = mapped_column(
        str_enum(RankingMethod, "ranking_method"), default=RankingMethod.MEAN_RANK
    )
    primary_metric: Mapped[str] = mapped_column(String(64), default="mae")
    primary_higher_is_better: Mapped[bool] = mapped_column(default=False)
    # [{"metric": "psnr", "higher_is_better": true}, ...] shown (and, for rank-based methods,
    # ranked) next to the primary metric; an optional "group" overrides the registry's ranking
    # group (grouped_normalized_sum). Directions are the registry's (checked when saved).
    extra_columns: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    submission_selection: Mapped[SubmissionSelection] = mapped_column(
        str_enum(SubmissionSelection, "submission_selection"), default=SubmissionSelection.BEST
    )
    # Every case counts: see CasePolicy. Penalties: {metric: value} for failed cases ("worst").
    case_policy: Mapped[CasePolicy] = mapped_column(
        str_enum(CasePolicy, "case_policy"), default=CasePolicy.FAIL
    )
    case_penalties: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    geometry_policy: Mapped[GeometryPolicy] = mapped_column(
        str_enum(GeometryPolicy, "geometry_policy"), default=GeometryPolicy.REJECT,
        server_default=GeometryPolicy.REJECT.value)

    # Visibility to participants.
    leaderboard_public: Mapped[bool] = mapped_column(default=True)
    # Bumped (in the same transaction) by everything that changes the phase's leaderboard;
    # the stored snapshot is current while its version equals this one.
    leaderboard_version: Mapped[int] = mapped_column(default=0, server_default="0")
    show_case_results: Mapped[bool] = mapped_column(default=False)
    show_case_logs: Mapped[bool] = mapped_column(default=False)
