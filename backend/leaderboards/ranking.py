"""Adapter from leaderboard rows to ``evaluator.ranking`` (ties share a rank, 1, 1, 3).

Rows missing a value of a ranked metric are left unranked (rank None) rather than ranked
last, so they never appear among, let alone above, the ranked ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from backend.models import RankingMethod
from evaluator import ranking

METHOD_NAMES = {
    RankingMethod.ABSOLUTE: "absolute",
    RankingMethod.MEAN_RANK: "mean_rank",
    RankingMethod.MEDIAN_RANK: "median_rank",
    RankingMethod.NORMALIZED_SUM: "synthrad",
}


@dataclass(frozen=True)
class Column:
    metric: str
    higher_is_better: bool


@dataclass
class Ranked:
    rank: int | None  # None: unranked (no value for a ranked metric)
    score: float | None
    metric_ranks: dict[str, int | None] = field(default_factory=dict)


def number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def rank_rows(
    rows: Sequence[dict[str, object]], columns: Sequence[Column], method: RankingMethod
) -> list[Ranked]:
    ranked_cols = columns[:1] if method is RankingMethod.ABSOLUTE else columns
    metrics = {c.metric: c.higher_is_better for c in ranked_cols}
    complete = {
        str(i): {c.metric: number(r.get(c.metric)) for c in ranked_cols}
        for i, r in enumerate(rows)
        if all(number(r.get(c.metric)) is not None for c in ranked_cols)
    }
    results = (
        ranking.rank_submissions(complete, metrics, METHOD_NAMES[method], columns[0].metric)
        if complete
        else {}
    )
    out: list[Ranked] = []
    for i, _ in enumerate(rows):
        res = results.get(str(i))
        if res is None:
            out.append(Ranked(None, None, {c.metric: None for c in columns}))
        else:
            per = {c.metric: res.metric_ranks.get(c.metric) for c in columns}
            out.append(Ranked(res.rank, number(res.score), per))
    return out


def competition_ranks(values: Sequence[float | None], higher_is_better: bool) -> list[int | None]:
    """Per-metric ranks for display; None stays unranked."""
    ranks = ranking.competition_ranks({str(i): v for i, v in enumerate(values)}, higher_is_better)
    return [ranks[str(i)] if v is not None else None for i, v in enumerate(values)]
