"""The leaderboard page's view model over ``backend.leaderboards.service.build``: own rows,
baselines, rank-stability intervals and server-side sorting (so it works without JS)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy.orm import Session

from backend import access
from backend.leaderboards import service as leaderboards_service
from backend.leaderboards.schemas import Leaderboard
from backend.models import Challenge, Phase, RankingMethod, SubmissionSelection, User
from backend.submissions import service as submissions_service
from backend.web.metrics_meta import MetricMeta
from backend.web.plots import rank_interval
from backend.web.stability import rank_intervals
from backend.web.views import RANKING_TEXT, phase_columns

BOOTSTRAP_SAMPLES = 200


@dataclass
class LbRow:
    rank: int | None
    team: str
    submission_id: int
    created_at: datetime
    values: dict[str, float | None]
    metric_ranks: dict[str, int | None]
    score: float | None
    own: bool
    baseline: bool
    disqualified: bool
    cases: int
    can_open: bool
    comment: str = ""
    interval: tuple[float, float] | None = None
    interval_svg: Markup = field(default_factory=Markup)


@dataclass
class LbView:
    columns: list[MetricMeta]
    rows: list[LbRow]
    sort: str
    dir: str
    method_text: str
    selection_text: str
    score_label: str
    score_higher_is_better: bool
    has_intervals: bool
    bootstrap_samples: int
    csv_url: str
    note: str = ""


SCORE_LABELS = {
    RankingMethod.MEAN_RANK: ("Mean rank", False),
    RankingMethod.MEDIAN_RANK: ("Median rank", False),
    RankingMethod.NORMALIZED_SUM: ("Score", True),
    RankingMethod.GROUPED_NORMALIZED_SUM: ("Score", True),
}


def _sort_key(key: str, row: LbRow) -> Any:
    if key == "team":
        return row.team.lower()
    if key == "submitted":
        return row.created_at
    if key == "cases":
        return row.cases
    if key == "score":
        return row.score
    if key == "rank":
        return row.rank
    return row.values.get(key)


def sort_rows(rows: list[LbRow], key: str, direction: str) -> list[LbRow]:
    """Missing values go last in either direction (NaN never ranks above a number)."""
    present = [r for r in rows if _sort_key(key, r) is not None]
    missing = [r for r in rows if _sort_key(key, r) is None]
    present.sort(key=lambda r: _sort_key(key, r), reverse=direction == "desc")
    return present + missing


def build(
    session: Session,
    user: User | None,
    challenge: Challenge,
    phase: Phase,
    sort: str = "rank",
    direction: str = "asc",
) -> tuple[Leaderboard, LbView]:
    board = leaderboards_service.build(session, user, challenge, phase)
    organizer = access.is_organizer(session, user, challenge.id)
    columns = phase_columns(phase)
    own_name = user.username if user is not None else None
    rows: list[LbRow] = []
    per_case: dict[int, dict[int, dict[str, object]]] = {}
    stamps: list[object] = []
    for r in board.rows:
        metrics = submissions_service.case_metrics(session, r.submission_id)
        if r.rank is not None:
            per_case[r.submission_id] = metrics
            agg = submissions_service.aggregate_of(session, r.submission_id)
            stamps.append((r.submission_id, agg.updated_at if agg is not None else None))
        own = own_name is not None and r.username == own_name
        rows.append(
            LbRow(
                rank=r.rank,
                team=r.username,
                submission_id=r.submission_id,
                created_at=r.created_at,
                values=dict(r.values),
                metric_ranks=dict(r.ranks),
                score=r.score,
                own=own,
                baseline=r.is_baseline,
                disqualified=r.is_disqualified,
                cases=len(metrics),
                can_open=own or organizer,
            )
        )
    cols = leaderboards_service.columns_of(phase)
    intervals = rank_intervals(
        per_case, cols, phase.ranking_method, samples=BOOTSTRAP_SAMPLES,
        cache_key=(phase.id, phase.ranking_method.value, tuple(cols), tuple(stamps)),
    )
    ranked_n = sum(1 for r in rows if r.rank is not None)
    for row in rows:
        iv = intervals.get(row.submission_id)
        if iv is not None and row.rank is not None:
            row.interval = iv
            row.interval_svg = rank_interval(row.rank, iv[0], iv[1], ranked_n)
    valid_keys = {"rank", "team", "submitted", "cases", "score", *(c.name for c in columns)}
    sort = sort if sort in valid_keys else "rank"
    direction = direction if direction in ("asc", "desc") else "asc"
    if sort != "rank" or direction != "asc":
        rows = sort_rows(rows, sort, direction)
    score_label, score_hib = SCORE_LABELS.get(phase.ranking_method, ("", False))
    selection = (
        "Each team's best submission counts"
        if phase.submission_selection is SubmissionSelection.BEST
        else "Each team's latest successful submission counts"
    )
    note = ""
    if any(r.disqualified for r in rows):
        note = "Disqualified submissions are listed at the end without a rank."
    return board, LbView(
        columns=columns,
        rows=rows,
        sort=sort,
        dir=direction,
        method_text=RANKING_TEXT.get(phase.ranking_method, phase.ranking_method.value),
        selection_text=selection,
        score_label=score_label,
        score_higher_is_better=score_hib,
        has_intervals=bool(intervals),
        bootstrap_samples=BOOTSTRAP_SAMPLES,
        csv_url=f"/challenges/{challenge.slug}/{phase.slug}/leaderboard.csv",
        note=note,
    )
