from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from backend.auth.identity import Username
from backend.models import (
    CasePolicy,
    ChallengeRole,
    GeometryPolicy,
    PhaseKind,
    RankingMethod,
    SubmissionSelection,
)
from backend.text import STORABLE, Text

SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"


class ChallengeIn(BaseModel):
    slug: str = Field(pattern=SLUG)
    title: Text = Field(min_length=1, max_length=200)
    description: Text = ""
    is_public: bool = True


class ChallengePatch(BaseModel):
    title: Annotated[str, Field(min_length=1, max_length=200), STORABLE] | None = None
    description: Text | None = None
    is_public: bool | None = None


class ChallengeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    slug: str
    title: str
    description: str
    is_public: bool
    created_at: datetime
    my_role: ChallengeRole | None = None


class MemberIn(BaseModel):
    username: Username  # normalised: looked up as stored
    role: ChallengeRole


class MemberOut(BaseModel):
    user_id: int
    username: str
    role: ChallengeRole


Penalty = Annotated[float, Field(allow_inf_nan=False)]


class ColumnSpec(BaseModel):
    metric: Text = Field(min_length=1, max_length=64)
    higher_is_better: bool | None = Field(
        default=None,
        description="Omit it: the direction comes from the evaluator's metric registry; a "
        "value that contradicts the registry is refused (422).",
    )
    group: str | None = Field(
        default=None, min_length=1, max_length=64, exclude_if=lambda v: v is None,
        description="Ranking group for grouped_normalized_sum (default: the registry's: "
        "image similarity, geometry, photon dose, proton dose).",
    )


class PhaseSettings(BaseModel):
    """Every phase setting; all optional so the same model serves PATCH."""

    title: Annotated[str, Field(min_length=1, max_length=200), STORABLE] | None = None
    kind: PhaseKind | None = None
    dataset: Text | None = Field(default=None, description="Dataset slug")
    dataset_version: int | None = Field(default=None, ge=1, le=2**31 - 1,
                                       description="Default: latest version")
    is_open: bool | None = None
    opens_at: datetime | None = None
    closes_at: datetime | None = None
    submissions_per_period: int | None = Field(default=None, ge=0, le=10000)
    submission_period_s: int | None = Field(
        default=None, ge=0, le=100 * 366 * 24 * 3600,
        description="Rolling window in seconds; 0 = the whole phase",
    )
    case_time_limit_s: int | None = Field(default=None, ge=1)
    memory_mb: int | None = Field(default=None, ge=64)
    cpus: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    gpu_required: bool | None = None
    batch_size: int | None = Field(default=None, ge=1, le=10000)
    metric_profile: Annotated[str, Field(max_length=32), STORABLE] | None = None
    ranking_method: RankingMethod | None = None
    primary_metric: Annotated[str, Field(max_length=64), STORABLE] | None = None
    primary_higher_is_better: bool | None = Field(
        default=None, description="Derived from the metric registry; a value that "
        "contradicts it is refused (422).")
    extra_columns: list[ColumnSpec] | None = None
    submission_selection: SubmissionSelection | None = None
    leaderboard_public: bool | None = None
    show_case_results: bool | None = None
    show_case_logs: bool | None = None
    case_policy: CasePolicy | None = Field(
        default=None,
        description="What a case without a valid sCT (or with a failed metric) does: 'fail' "
        "fails the submission (default for test phases); 'worst' gives the case the penalty "
        "set in case_penalties, else the worst value of the phase's submissions for it.",
    )
    case_penalties: dict[str, Penalty] | None = Field(
        default=None, description="{metric: value} a failed case takes under 'worst'.")
    geometry_policy: GeometryPolicy | None = Field(
        default=None,
        description="An sCT whose spacing, origin or direction differs from the input's: "
        "'reject' fails the case (default); 'impose' gives it the input's geometry when the "
        "size matches, as SynthRAD's official evaluation does, and the case shows a warning.")


class PhaseIn(PhaseSettings):
    slug: str = Field(pattern=SLUG)
    title: Text = Field(min_length=1, max_length=200)
    kind: PhaseKind = PhaseKind.VALIDATION


class PhaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    challenge_id: int
    slug: str
    title: str
    kind: PhaseKind
    dataset_version_id: int | None
    is_open: bool
    opens_at: datetime | None
    closes_at: datetime | None
    accepting_submissions: bool = False
    submissions_per_period: int
    submission_period_s: int | None
    case_time_limit_s: int
    memory_mb: int
    cpus: float
    gpu_required: bool
    batch_size: int
    metric_profile: str
    ranking_method: RankingMethod
    primary_metric: str
    primary_higher_is_better: bool
    extra_columns: list[ColumnSpec]
    submission_selection: SubmissionSelection
    leaderboard_public: bool
    show_case_results: bool
    show_case_logs: bool
    case_policy: CasePolicy
    case_penalties: dict[str, float]
    geometry_policy: GeometryPolicy
