"""Adapter from leaderboard rows to ``evaluator.ranking`` (ties share a rank, 1, 1, 3).

Directions come from the evaluator's metric registry, whatever a phase row stores (a phase
saved before directions were checked may hold an inverted one). Rows missing a value of a
ranked metric are left unranked (rank None), never among or above the ranked ones. ±inf
are values (a perfect PSNR is the best); NaN is a failed metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from backend.models import RankingMethod
from backend.numbers import metric_value
from evaluator import ranking
from evaluator.metrics import group_of, spec_for

# The database's method names are the evaluator's (the evaluator still accepts its old
# "synthrad" for normalized_sum).
METHOD_NAMES = {m: m.value for m in RankingMethod}


@dataclass(frozen=True)
class Column:
    metric: str
    higher_is_better: bool
    group: str | None = None  # grouped_normalized_sum: None = the registry's group


def column(metric: str, stored_higher_is_better: object, group: object = None) -> Column:
    """A ranked column; a known metric takes the registry's direction and default group."""
    spec = spec_for(metric)
    hib = spec.higher_is_better if spec is not None else bool(stored_higher_is_better)
    return Column(metric, hib, str(group) if group else group_of(metric))


def groups_of(columns: Sequence[Column]) -> dict[str, list[str]] | None:
    """The ranking groups of ``columns`` (None when a column has none: registry defaults)."""
    if any(c.group is None for c in columns):
        return None
    out: dict[str, list[str]] = {}
    for c in columns:
        out.setdefault(str(c.group), []).append(c.metric)
    return out


@dataclass
class Ranked:
    rank: int | None  # None: unranked (no value for a ranked metric)
    score: float | None
    metric_ranks: dict[str, int | None] = field(default_factory=dict)


number = metric_value  # a stored metric value as a float (±inf kept; NaN, None -> None)


def ranked_columns(columns: Sequence[Column], method: RankingMethod) -> Sequence[Column]:
    return columns[:1] if method is RankingMethod.ABSOLUTE else columns


def rank_rows(
    rows: Sequence[Mapping[str, object]], columns: Sequence[Column], method: RankingMethod
) -> list[Ranked]:
    ranked_cols = ranked_columns(columns, method)
    metrics = {c.metric: c.higher_is_better for c in ranked_cols}
    values = {str(i): {c.metric: number(r.get(c.metric)) for c in ranked_cols}
              for i, r in enumerate(rows)}
    results = ranking.rank_submissions(
        values, metrics, METHOD_NAMES[method], columns[0].metric, groups_of(ranked_cols)
    ) if values else {}
    out: list[Ranked] = []
    for i, _ in enumerate(rows):
        res = results.get(str(i))
        if res is None or not res.complete:
            out.append(Ranked(None, None, {c.metric: None for c in columns}))
        else:
            per = {c.metric: res.metric_ranks.get(c.metric) for c in columns}
            score = None if math.isnan(res.score) else res.score
            out.append(Ranked(res.rank, score, per))
    return out


def competition_ranks(values: Sequence[float | None], higher_is_better: bool) -> list[int | None]:
    """Per-metric ranks for display; None stays unranked."""
    ranks = ranking.competition_ranks({str(i): v for i, v in enumerate(values)}, higher_is_better)
    return [ranks[str(i)] if v is not None else None for i, v in enumerate(values)]
