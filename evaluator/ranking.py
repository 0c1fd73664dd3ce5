"""Aggregation over cases and leaderboard ranking (pure functions).

Conventions: a value that is NaN, None or missing never ranks above a number; equal values
share the best of their ranks (competition ranking 1, 1, 3); ``metrics`` maps each metric name
to ``higher_is_better`` (see :func:`evaluator.metrics.directions`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Values = Mapping[str, Mapping[str, float | None]]  # submission_id -> metric -> value
Method = Literal["absolute", "mean_rank", "median_rank", "synthrad"]
METHODS: tuple[str, ...] = ("absolute", "mean_rank", "median_rank", "synthrad")


def _is_number(v: float | None) -> bool:
    return v is not None and not math.isnan(v)


def aggregate(values: Iterable[float | None]) -> dict[str, float]:
    """mean, std (population, ddof=0), median, p25, p75, min, max, count over the numbers.

    NaN/None values are left out (``count`` says how many numbers were used); with no numbers
    every statistic is NaN and ``count`` is 0.
    """
    arr = np.array([float(v) for v in values if v is not None and _is_number(float(v))],
                   dtype=np.float64)
    if arr.size == 0:
        nan = float("nan")
        return {"mean": nan, "std": nan, "median": nan, "p25": nan, "p75": nan,
                "min": nan, "max": nan, "count": 0}
    with np.errstate(invalid="ignore"):  # +inf (a perfect PSNR) makes std/percentiles NaN
        return _stats(arr)


def _stats(arr: np.ndarray[Any, Any]) -> dict[str, float]:
    return {
        "mean": float(np.mean(arr)),
        "std": float(np.std(arr)),
        "median": float(np.median(arr)),
        "p25": float(np.percentile(arr, 25)),
        "p75": float(np.percentile(arr, 75)),
        "min": float(np.min(arr)),
        "max": float(np.max(arr)),
        "count": int(arr.size),
    }


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


def _finish(
    scores: Mapping[str, float], higher_is_better: bool, metric_ranks: Mapping[str, dict[str, int]]
) -> dict[str, RankResult]:
    final = competition_ranks(scores, higher_is_better)
    order = sorted(scores, key=lambda s: (final[s], s))
    return {
        s: RankResult(s, final[s], scores[s], dict(metric_ranks.get(s, {}))) for s in order
    }


def _per_metric_ranks(values: Values, metrics: Mapping[str, bool]) -> dict[str, dict[str, int]]:
    per_sub: dict[str, dict[str, int]] = {s: {} for s in values}
    for metric, higher in metrics.items():
        ranks = competition_ranks({s: values[s].get(metric) for s in values}, higher)
        for s, r in ranks.items():
            per_sub[s][metric] = r
    return per_sub


def rank_absolute(values: Values, metric: str, higher_is_better: bool) -> dict[str, RankResult]:
    """Rank on one metric's value; the score is that value (NaN when missing)."""
    scores = {s: _value(values[s].get(metric)) for s in values}
    per = _per_metric_ranks(values, {metric: higher_is_better})
    return _finish(scores, higher_is_better, per)


def _value(v: float | None) -> float:
    return float(v) if v is not None else float("nan")


def rank_mean_of_ranks(values: Values, metrics: Mapping[str, bool]) -> dict[str, RankResult]:
    """Score = mean of the per-metric ranks (lower is better)."""
    per = _per_metric_ranks(values, metrics)
    scores = {s: float(np.mean([per[s][m] for m in metrics])) for s in values}
    return _finish(scores, False, per)


def rank_median_of_ranks(values: Values, metrics: Mapping[str, bool]) -> dict[str, RankResult]:
    """Score = median of the per-metric ranks (lower is better)."""
    per = _per_metric_ranks(values, metrics)
    scores = {s: float(np.median([per[s][m] for m in metrics])) for s in values}
    return _finish(scores, False, per)


def rank_synthrad(values: Values, metrics: Mapping[str, bool]) -> dict[str, RankResult]:
    """SynthRAD's sum of min-max normalised metrics (higher is better).

    Per metric, the worst submission maps to 0 and the best to 1 (0.5 for all when they are
    equal). A missing/NaN value counts 0, the worst a number can get, so it never ranks above.
    """
    per = _per_metric_ranks(values, metrics)
    scores = {s: 0.0 for s in values}
    for metric, higher in metrics.items():
        nums = {s: float(v) for s in values
                if (v := values[s].get(metric)) is not None and _is_number(v)}
        if not nums:
            continue
        best = max(nums.values()) if higher else min(nums.values())
        worst = min(nums.values()) if higher else max(nums.values())
        for s, v in nums.items():
            scores[s] += 0.5 if best == worst else (v - worst) / (best - worst)
    return _finish(scores, True, per)


def rank_submissions(
    values: Values,
    metrics: Mapping[str, bool],
    method: str = "mean_rank",
    metric: str | None = None,
) -> dict[str, RankResult]:
    """Dispatch on ``method``; ``absolute`` uses ``metric`` (default: the first of ``metrics``)."""
    if method == "absolute":
        name = metric if metric is not None else next(iter(metrics))
        return rank_absolute(values, name, metrics[name])
    if method == "mean_rank":
        return rank_mean_of_ranks(values, metrics)
    if method == "median_rank":
        return rank_median_of_ranks(values, metrics)
    if method == "synthrad":
        return rank_synthrad(values, metrics)
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
        result = rank_submissions(values, metrics, method, metric)
        ranks[b] = [result[s].rank for s in subs]
    out = {}
    for i, s in enumerate(subs):
        lo, med, hi = np.percentile(ranks[:, i], [2.5, 50.0, 97.5])
        out[s] = RankStability(s, float(med), float(lo), float(hi))
    return out


def ranks_in_order(results: Mapping[str, RankResult]) -> Sequence[RankResult]:
    """The results sorted by rank (then submission id)."""
    return sorted(results.values(), key=lambda r: (r.rank, r.submission_id))
