"""Leaderboard ranking (pure functions) and the re-exported case aggregation.

Conventions, under every method: equal scores share the best of their ranks (competition
ranking 1, 1, 3); ``metrics`` maps each ranked metric to ``higher_is_better`` (see
:func:`evaluator.metrics.directions`); ±inf are numbers ranked by the metric's direction
(``+inf`` PSNR is the best); a row with a missing or NaN value of a ranked metric is
*incomplete*: it ranks below every complete row (all incomplete rows share the rank after
the last complete one, score NaN) and takes no part in the others' ranks or normalisation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from evaluator.aggregation import aggregate, is_valid
from evaluator.metrics import group_of

Values = Mapping[str, Mapping[str, float | None]]  # submission_id -> metric -> value
Groups = Mapping[str, Sequence[str]]  # group name -> its metrics
Method = Literal["absolute", "mean_rank", "median_rank", "normalized_sum",
                 "grouped_normalized_sum"]
METHODS: tuple[str, ...] = ("absolute", "mean_rank", "median_rank", "normalized_sum",
                            "grouped_normalized_sum")
# Older names still accepted (phases and callers written before the plain names).
METHOD_ALIASES = {"synthrad": "normalized_sum"}

__all__ = ["METHODS", "RankResult", "RankStability", "aggregate", "bootstrap_rank_stability",
           "competition_ranks", "groups_for", "rank_submissions", "ranks_in_order"]


def _is_number(v: float | None) -> bool:
    return is_valid(v)


def competition_ranks(
    values: Mapping[str, float | None], higher_is_better: bool
) -> dict[str, int]:
    """Rank 1 is best; ties share the lowest rank (1, 1, 3); non-numbers come last, tied."""
    numbers = {k: float(v) for k, v in values.items() if v is not None and _is_number(v)}
    ordered = sorted(numbers.values(), reverse=higher_is_better)
    first_rank: dict[float, int] = {}
    for i, v in enumerate(ordered):
        first_rank.setdefault(v, i + 1)
    last = len(numbers) + 1
    return {k: first_rank[numbers[k]] if k in numbers else last for k in values}


@dataclass(frozen=True)
class RankResult:
    submission_id: str
    rank: int
    score: float
    metric_ranks: dict[str, int] = field(default_factory=dict)
    complete: bool = True  # False: a ranked metric is missing/NaN (ranked below all others)


def _per_metric_ranks(values: Values, metrics: Mapping[str, bool]) -> dict[str, dict[str, int]]:
    per_sub: dict[str, dict[str, int]] = {s: {} for s in values}
    for metric, higher in metrics.items():
        ranks = competition_ranks({s: values[s].get(metric) for s in values}, higher)
        for s, r in ranks.items():
            per_sub[s][metric] = r
    return per_sub


def _complete(values: Values, metrics: Mapping[str, bool]) -> dict[str, dict[str, float]]:
    out = {}
    for s, row in values.items():
        vals = {m: row.get(m) for m in metrics}
        if all(_is_number(v) for v in vals.values()):
            out[s] = {m: float(v) for m, v in vals.items() if v is not None}
    return out


def _finish(
    values: Values,
    scores: Mapping[str, float],
    higher_is_better: bool,
    metric_ranks: Mapping[str, dict[str, int]],
) -> dict[str, RankResult]:
    """Ranks the complete rows by score; incomplete rows share the rank after them."""
    final = competition_ranks(scores, higher_is_better)
    after = len(scores) + 1
    results = {s: RankResult(s, final[s], scores[s], dict(metric_ranks.get(s, {})))
               for s in scores}
    for s in values:
        if s not in results:
            results[s] = RankResult(s, after, math.nan, {}, complete=False)
    return {s: results[s] for s in sorted(results, key=lambda s: (results[s].rank, s))}


def rank_absolute(values: Values, metric: str, higher_is_better: bool) -> dict[str, RankResult]:
    """Rank on one metric's value; the score is that value."""
    metrics = {metric: higher_is_better}
    complete = _complete(values, metrics)
    scores = {s: row[metric] for s, row in complete.items()}
    return _finish(values, scores, higher_is_better, _per_metric_ranks(complete, metrics))


def rank_mean_of_ranks(values: Values, metrics: Mapping[str, bool]) -> dict[str, RankResult]:
    """Score = mean of the per-metric competition ranks (lower is better), ranked again."""
    complete = _complete(values, metrics)
    per = _per_metric_ranks(complete, metrics)
    scores = {s: math.fsum(per[s][m] for m in metrics) / len(metrics) for s in complete}
    return _finish(values, scores, False, per)


def rank_median_of_ranks(values: Values, metrics: Mapping[str, bool]) -> dict[str, RankResult]:
    """Score = median of the per-metric competition ranks (lower is better), ranked again."""
    complete = _complete(values, metrics)
    per = _per_metric_ranks(complete, metrics)
    scores = {s: float(statistics.median(per[s][m] for m in metrics)) for s in complete}
    return _finish(values, scores, False, per)


def _normalised(column: Mapping[str, float], higher: bool) -> dict[str, float]:
    """Min-max normalisation, 1 = best and 0 = worst (SynthRAD's rule; 0.5 when all equal).

    An infinite value on the good side (``+inf`` PSNR) scores 1, on the bad side 0; the
    finite values are normalised between the finite extremes.
    """
    good = math.inf if higher else -math.inf
    finite = [v for v in column.values() if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    best, worst = (hi, lo) if higher else (lo, hi)
    out = {}
    for s, v in column.items():
        if math.isinf(v):
            out[s] = 1.0 if v == good else 0.0
        elif best == worst:
            out[s] = 0.5
        else:
            out[s] = (v - worst) / (best - worst)
    return out


def _normalised_table(
    complete: Mapping[str, Mapping[str, float]], metrics: Mapping[str, bool]
) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {s: {} for s in complete}
    for metric, higher in metrics.items():
        for s, v in _normalised({s: row[metric] for s, row in complete.items()}, higher).items():
            table[s][metric] = v
    return table


def rank_normalized_sum(values: Values, metrics: Mapping[str, bool]) -> dict[str, RankResult]:
    """SynthRAD2023: sum over metrics of the min-max normalised per-team means (higher wins)."""
    complete = _complete(values, metrics)
    norm = _normalised_table(complete, metrics)
    scores = {s: math.fsum(norm[s].values()) for s in complete}
    return _finish(values, scores, True, _per_metric_ranks(complete, metrics))


def groups_for(metrics: Sequence[str], groups: Groups | None = None) -> dict[str, list[str]]:
    """``groups`` checked against the ranked ``metrics``, or the registry's groups.

    Every ranked metric must be in exactly one group and every grouped metric ranked
    (ValueError says which is not).
    """
    if groups is None:
        out: dict[str, list[str]] = {}
        for m in metrics:
            g = group_of(m)
            if g is None:
                raise ValueError(f"metric '{m}' has no registry group; give the groups")
            out.setdefault(g, []).append(m)
        return out
    seen: dict[str, str] = {}
    for g, members in groups.items():
        if not members:
            raise ValueError(f"group '{g}' has no metrics")
        for m in members:
            if m not in metrics:
                raise ValueError(f"group '{g}' names '{m}', which is not a ranked metric")
            if m in seen:
                raise ValueError(f"metric '{m}' is in two groups ('{seen[m]}' and '{g}')")
            seen[m] = g
    missing = [m for m in metrics if m not in seen]
    if missing:
        raise ValueError(f"metric(s) {', '.join(missing)} are in no group")
    return {g: list(ms) for g, ms in groups.items()}


def rank_grouped_normalized_sum(
    values: Values, metrics: Mapping[str, bool], groups: Groups | None = None
) -> dict[str, RankResult]:
    """SynthRAD2025: the mean over groups of each group's mean normalised metric.

    Each group (image similarity, geometry, photon dose, proton dose) weighs the same,
    however many metrics it has.
    """
    resolved = groups_for(list(metrics), groups)
    complete = _complete(values, metrics)
    norm = _normalised_table(complete, metrics)
    scores = {
        s: math.fsum(math.fsum(norm[s][m] for m in ms) / len(ms) for ms in resolved.values())
        / len(resolved)
        for s in complete
    }
    return _finish(values, scores, True, _per_metric_ranks(complete, metrics))


def rank_synthrad(values: Values, metrics: Mapping[str, bool]) -> dict[str, RankResult]:
    """Old name of :func:`rank_normalized_sum`."""
    return rank_normalized_sum(values, metrics)


def rank_submissions(
    values: Values,
    metrics: Mapping[str, bool],
    method: str = "mean_rank",
    metric: str | None = None,
    groups: Groups | None = None,
) -> dict[str, RankResult]:
    """Dispatch on ``method``; ``absolute`` uses ``metric`` (default: the first of ``metrics``);
    ``grouped_normalized_sum`` uses ``groups`` (default: the registry's groups)."""
    method = METHOD_ALIASES.get(method, method)
    if method == "absolute":
        name = metric if metric is not None else next(iter(metrics))
        return rank_absolute(values, name, metrics[name])
    if method == "mean_rank":
        return rank_mean_of_ranks(values, metrics)
    if method == "median_rank":
        return rank_median_of_ranks(values, metrics)
    if method == "normalized_sum":
        return rank_normalized_sum(values, metrics)
    if method == "grouped_normalized_sum":
        return rank_grouped_normalized_sum(values, metrics, groups)
    raise ValueError(f"unknown ranking method {method!r} (expected one of {', '.join(METHODS)})")


@dataclass(frozen=True)
class RankStability:
    submission_id: str
    median_rank: float
    ci_low: float
    ci_high: float


def bootstrap_rank_stability(
    per_case_values: Mapping[str, Mapping[str, Mapping[str, float | None]]],
    metrics: Mapping[str, bool],
    method: str = "mean_rank",
    metric: str | None = None,
    n: int = 1000,
    seed: int = 0,
    groups: Groups | None = None,
) -> dict[str, RankStability]:
    """Rank stability under resampling of the test cases.

    ``per_case_values``: submission_id -> case_id -> metric -> value. Each of the ``n``
    bootstrap samples draws the (sorted) union of case ids with replacement, averages every
    metric per submission over the drawn cases (NaN-aware; missing counts as NaN) and ranks
    with ``method``. Reports the median rank and the 2.5/97.5 percentiles (linear
    interpolation) per submission. Deterministic for a seed.
    """
    subs = sorted(per_case_values)
    cases = sorted({c for s in subs for c in per_case_values[s]})
    names = list(metrics)
    if not subs or not cases:
        return {}
    table = np.full((len(subs), len(cases), len(names)), np.nan)
    for i, s in enumerate(subs):
        for j, c in enumerate(cases):
            row: Mapping[str, Any] = per_case_values[s].get(c, {})
            for k, m in enumerate(names):
                v = row.get(m)
                if v is not None:
                    table[i, j, k] = float(v)
    rng = np.random.default_rng(seed)
    ranks = np.empty((n, len(subs)))
    for b in range(n):
        idx = rng.integers(0, len(cases), size=len(cases))
        sample = table[:, idx, :]
        counts = np.sum(~np.isnan(sample), axis=1)
        sums = np.nansum(sample, axis=1)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        values = {s: {m: float(means[i, k]) for k, m in enumerate(names)}
                  for i, s in enumerate(subs)}
        result = rank_submissions(values, metrics, method, metric, groups)
        ranks[b] = [result[s].rank for s in subs]
    out = {}
    for i, s in enumerate(subs):
        lo, med, hi = np.percentile(ranks[:, i], [2.5, 50.0, 97.5])
        out[s] = RankStability(s, float(med), float(lo), float(hi))
    return out


def ranks_in_order(results: Mapping[str, RankResult]) -> Sequence[RankResult]:
    """The results sorted by rank (then submission id)."""
    return sorted(results.values(), key=lambda r: (r.rank, r.submission_id))
