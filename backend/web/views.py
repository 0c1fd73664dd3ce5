"""View models: what the templates show, assembled from the backend's services.

Pages never query the database themselves; they call these helpers, which call the
services and repositories of each domain and shape the answer for display.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from backend import access
from backend.challenges import service as challenges_service
from backend.challenges.service import accepting_reason
from backend.models import (
    Challenge,
    ChallengeRole,
    DatasetVersion,
    Phase,
    RankingMethod,
    SubmissionSelection,
    User,
)
from backend.web.metrics_meta import MetricMeta, metric_meta
from backend.web.submission_views import (
    SubmissionRow,
    my_submissions,
    my_valid_images,
    quota,
    submission_row,
)

__all__ = [
    "ChallengeCard",
    "PhaseInfo",
    "SubmissionRow",
    "challenge_card",
    "my_submissions",
    "my_valid_images",
    "phase_columns",
    "phase_info",
    "quota",
    "submission_row",
]


@dataclass
class ChallengeCard:
    challenge: Challenge
    phase_count: int
    open_phases: int
    role: str | None


def challenge_card(session: Session, challenge: Challenge, user: User | None) -> ChallengeCard:
    phases = challenges_service.phases_of(session, challenge.id)
    role = access.role_in(session, user, challenge.id)
    return ChallengeCard(
        challenge=challenge,
        phase_count=len(phases),
        open_phases=sum(1 for p in phases if accepting_reason(p) is None),
        role=role.value if isinstance(role, ChallengeRole) else None,
    )


RANKING_TEXT = {
    RankingMethod.ABSOLUTE: "by the primary metric",
    RankingMethod.MEAN_RANK: "mean of the per-metric ranks (ties share a rank)",
    RankingMethod.MEDIAN_RANK: "median of the per-metric ranks (ties share a rank)",
    RankingMethod.NORMALIZED_SUM: "sum of min–max normalised metric means (SynthRAD2023)",
    RankingMethod.GROUPED_NORMALIZED_SUM: (
        "min–max normalised metric means, each metric group weighted equally (SynthRAD2025)"),
}


@dataclass
class PhaseInfo:
    phase: Phase
    accepting: bool
    reason: str
    case_count: int | None
    limit_text: str
    metrics_text: str
    ranking_text: str
    selection_text: str
    primary_label: str


def phase_columns(phase: Phase) -> list[MetricMeta]:
    """The leaderboard's metric columns: the primary metric, then the extra columns."""
    cols = [metric_meta(phase.primary_metric, phase.primary_higher_is_better)]
    for extra in phase.extra_columns or []:
        name = str(extra.get("metric", ""))
        if name and name != phase.primary_metric:
            hib = extra.get("higher_is_better")
            cols.append(metric_meta(name, bool(hib) if hib is not None else None))
    return cols


def limit_text(phase: Phase) -> str:
    n = phase.submissions_per_period
    if n == 0:
        return "none allowed (limit 0)"
    per = "the whole phase" if phase.submission_period_s is None else _period(
        phase.submission_period_s
    )
    return f"{n} per {per}; failed and cancelled ones do not count; one at a time"


def _period(seconds: int) -> str:
    if seconds % 86400 == 0:
        days = seconds // 86400
        return "day" if days == 1 else f"{days} days"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return "hour" if hours == 1 else f"{hours} hours"
    return f"{seconds // 60} minutes"


def phase_info(session: Session, phase: Phase, user: User | None) -> PhaseInfo:
    reason = accepting_reason(phase)
    case_count = None
    if phase.dataset_version_id is not None:
        dv = session.get(DatasetVersion, phase.dataset_version_id)
        case_count = dv.case_count if dv is not None else None
    cols = phase_columns(phase)
    metrics = ", ".join(
        f"{c.label}{f' ({c.unit})' if c.unit else ''} {'↑' if c.higher_is_better else '↓'}"
        for c in cols
    )
    selection = (
        "your best submission counts"
        if phase.submission_selection is SubmissionSelection.BEST
        else "your latest successful submission counts"
    )
    return PhaseInfo(
        phase=phase,
        accepting=reason is None,
        reason=reason or "",
        case_count=case_count,
        limit_text=limit_text(phase),
        metrics_text=f"{metrics} — profile {phase.metric_profile}",
        ranking_text=RANKING_TEXT.get(phase.ranking_method, phase.ranking_method.value),
        selection_text=selection,
        primary_label=cols[0].label,
    )
