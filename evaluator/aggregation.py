"""Deterministic aggregation over cases, the phase's case policy, and JSON-safe metric values.

Determinism: values are sorted and summed with :func:`math.fsum` (exactly rounded), so any
permutation of the same per-case values gives bit-identical statistics; two identical
algorithms can therefore never rank apart on the last digit.

Non-finite values keep their meaning: ``+inf``/``-inf`` are numbers (a perfect sCT has
PSNR ``+inf``, the best value there is); NaN is a failed metric. JSON and PostgreSQL JSON
have no NaN/Infinity, so stored metric values use :func:`encode_metric`: the strings
``"inf"``, ``"-inf"`` and ``"nan"`` for the non-finite ones, plain numbers otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

CasePolicy = Literal["fail", "worst"]
CASE_POLICIES: tuple[str, ...] = ("fail", "worst")
STAT_KEYS = ("mean", "std", "median", "p25", "p75", "min", "max")
# How the statistics are named in what the evaluator writes: ours, or as SynthRAD's official
# evaluation names them (SynthRAD2025/evaluation evaluate.py:145-179, in its order), which its
# rank_teams.py and grand-challenge leaderboards read (``aggregates[metric]["mean"]``).
AGGREGATE_NAMINGS: tuple[str, ...] = ("syntharena", "synthrad")
SYNTHRAD_AGGREGATE_NAMES: dict[str, str] = {
    "mean": "mean", "max": "max", "min": "min", "std": "std",
    "p25": "25pc", "median": "50pc", "p75": "75pc", "count": "count"}

_ENCODED = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan,
            # also read what JSON writers such as pydantic's make of them
            "+inf": math.inf, "infinity": math.inf, "-infinity": -math.inf}


def exact_sum(values: Iterable[float]) -> float:
    """``math.fsum`` (exactly rounded, order-free) of finite values; when the exact sum leaves
    the float range, the infinity of its sign instead of fsum's OverflowError (a hostile sCT
    with finite values near 1e308 must score as infinitely bad, not crash the scoring)."""
    vals = list(values)
    try:
        return math.fsum(vals)
    except OverflowError:  # a partial sum overflowed: add the values scaled by 2**-64 (exact
        # for all but values below 1e-289, which cannot matter at this magnitude)
        scaled = math.fsum(math.ldexp(v, -64) for v in vals)
        try:
            return math.ldexp(scaled, 64)
        except OverflowError:
            return math.copysign(math.inf, scaled)


def encode_metric(value: float | None) -> float | str | None:
    """A JSON/PostgreSQL-safe form of one metric value: non-finite floats become strings."""
    if value is None:
        return None
    f = float(value)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def decode_metric(value: object) -> float | None:
    """The float behind a stored metric value (inverse of :func:`encode_metric`).

    ``None`` (nothing stored) stays None; booleans and unknown strings are not metrics (None).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _ENCODED.get(value.strip().lower())
    return None


def encode_metrics(values: Mapping[str, float | None]) -> dict[str, float | str | None]:
    return {k: encode_metric(v) for k, v in values.items()}


def decode_metrics(values: Mapping[str, object]) -> dict[str, float | None]:
    return {k: decode_metric(v) for k, v in values.items()}


def is_valid(value: float | None) -> bool:
    """A usable metric value: a number, ±inf included; NaN and None are failures."""
    return value is not None and not math.isnan(value)


def _percentile(ordered: Sequence[float], q: float) -> float:
    # numpy's "linear" rule, written out so an infinite neighbour yields that infinity
    # (numpy computes inf - inf = NaN there).
    h = (len(ordered) - 1) * q
    lo = math.floor(h)
    frac = h - lo
    a = ordered[lo]
    if frac == 0.0 or lo + 1 >= len(ordered):
        return a
    b = ordered[lo + 1]
    if a == b or math.isinf(a) or math.isinf(b):
        return b if math.isinf(b) and not math.isinf(a) else a
    return a + frac * (b - a)


def aggregate(values: Iterable[float | str | None]) -> dict[str, float]:
    """mean, std (population), median, p25, p75, min, max and count over the valid values.

    NaN/None are left out (``count`` says how many values were used; a case policy decides
    beforehand what a failed case contributes). ±inf take part: a mean with one ``+inf`` is
    ``+inf`` and its std is ``inf``. With no valid value every statistic is NaN.
    """
    # A total order (-0.0 before 0.0), so min/max/median do not depend on the input order.
    nums = sorted((v for v in (decode_metric(x) for x in values)
                   if v is not None and not math.isnan(v)),
                  key=lambda v: (v, math.copysign(1.0, v)))
    n = len(nums)
    if n == 0:
        return {**dict.fromkeys(STAT_KEYS, math.nan), "count": 0}
    finite = all(math.isfinite(v) for v in nums)
    if finite:
        # Finite values whose sum or spread leaves the float range give inf, never an error.
        mean = exact_sum(nums) / n
        std = math.sqrt(exact_sum((v - mean) * (v - mean) for v in nums) / n) \
            if math.isfinite(mean) else math.inf
    else:
        has_pos, has_neg = math.inf in nums, -math.inf in nums
        mean = math.nan if has_pos and has_neg else (math.inf if has_pos else -math.inf)
        std = math.inf
    return {
        "mean": mean,
        "std": std,
        "median": _percentile(nums, 0.5),
        "p25": _percentile(nums, 0.25),
        "p75": _percentile(nums, 0.75),
        "min": nums[0],
        "max": nums[-1],
        "count": n,
    }


def named_statistics(stats: Mapping[str, float], naming: str = "syntharena") -> dict[str, float]:
    """:func:`aggregate`'s statistics under ``naming`` (see :data:`AGGREGATE_NAMINGS`); the same
    numbers either way (both use numpy's linear percentile rule and the population std)."""
    if naming == "syntharena":
        return dict(stats)
    if naming != "synthrad":
        raise ValueError(f"unknown aggregate naming {naming!r} (expected syntharena or synthrad)")
    return {new: stats[old] for old, new in SYNTHRAD_AGGREGATE_NAMES.items() if old in stats}


PerCase = Mapping[str, Mapping[str, float | None]]  # case -> metric -> value


def worst_values(
    submissions: Iterable[PerCase], directions: Mapping[str, bool]
) -> dict[str, dict[str, float]]:
    """Per case and metric, the worst valid value among the given submissions.

    ``submissions``: each a ``{case: {metric: value}}`` of one submission of the phase. The
    ``worst`` case policy fills a failed case with these.
    """
    out: dict[str, dict[str, float]] = {}
    for per_case in submissions:
        for case, metrics in per_case.items():
            for metric, higher in directions.items():
                v = decode_metric(metrics.get(metric))
                if v is None or not is_valid(v):
                    continue
                row = out.setdefault(case, {})
                old = row.get(metric)
                if old is None or (v < old if higher else v > old):
                    row[metric] = v
    return out


def _fill_worst(
    metric: str,
    case: str,
    higher: bool,
    worst: Mapping[str, Mapping[str, float]],
    penalties: Mapping[str, float],
) -> float | None:
    if metric in penalties:
        return float(penalties[metric])
    v = worst.get(case, {}).get(metric)
    if v is not None:
        return v
    # Nobody scored this case: the worst value of the metric over every case of the phase.
    pool = [row[metric] for row in worst.values() if metric in row]
    if not pool:
        return None
    return min(pool) if higher else max(pool)


def aggregate_submission(
    per_case: PerCase,
    case_names: Iterable[str],
    directions: Mapping[str, bool],
    policy: str = "fail",
    *,
    worst: Mapping[str, Mapping[str, float]] | None = None,
    penalties: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, object], str | None]:
    """Aggregate one submission over every case of the phase under the case policy.

    ``per_case``: the scored cases, ``{case: {metric: value}}`` (a failed case is absent or
    has no values; stored strings are decoded). ``case_names``: every case of the phase.
    ``directions``: the metrics the policy covers, ``{metric: higher_is_better}``; other
    metrics found in ``per_case`` are aggregated over their valid values only (``count``
    says how many). ``policy``:

    - ``fail``: the submission fails unless every case has a valid value of every metric;
    - ``worst``: a missing case or a NaN value takes ``penalties[metric]`` when the organiser
      set one, else the worst value of that metric among the phase's submissions for that
      case (``worst``, see :func:`worst_values`), else that metric's worst over all cases.

    Returns ``(means, statistics, error)``: ``error`` is None or the one-line reason the
    submission fails; ``statistics`` holds ``per_metric`` (see :func:`aggregate`),
    ``cases_total``, ``cases_scored``, ``policy`` and ``filled`` (metric -> the cases that
    took a worst value or penalty).
    """
    if policy not in CASE_POLICIES:
        raise ValueError(f"unknown case policy {policy!r} (expected fail or worst)")
    cases = sorted(set(case_names))
    worst = worst or {}
    penalties = penalties or {}
    scored = [c for c in cases if any(is_valid(decode_metric(v))
                                      for v in per_case.get(c, {}).values())]
    columns: dict[str, list[float | None]] = {}
    filled: dict[str, list[str]] = {}
    for metric, higher in sorted(directions.items()):
        column: list[float | None] = []
        for case in cases:
            v = decode_metric(per_case.get(case, {}).get(metric))
            if not is_valid(v):
                if policy == "fail":
                    return {}, _stats({}, cases, scored, policy, {}), _fail_reason(
                        metric, case, per_case, len(cases), len(scored))
                v = _fill_worst(metric, case, higher, worst, penalties)
                if v is None:
                    return {}, _stats({}, cases, scored, policy, {}), (
                        f"'{metric}' has no value for case {case} and no submission of the "
                        "phase scored it; set a penalty for this metric.")
                filled.setdefault(metric, []).append(case)
            column.append(v)
        columns[metric] = column
    others = sorted({m for c in cases for m in per_case.get(c, {})} - set(directions))
    for metric in others:
        columns[metric] = [decode_metric(per_case.get(c, {}).get(metric)) for c in cases]
    per_metric = {m: aggregate(col) for m, col in columns.items()}
    means = {m: a["mean"] for m, a in per_metric.items()}
    return means, _stats(per_metric, cases, scored, policy, filled), None


def _fail_reason(metric: str, case: str, per_case: PerCase, total: int, scored: int) -> str:
    if not any(is_valid(decode_metric(v)) for v in per_case.get(case, {}).values()):
        return (f"{total - scored} of {total} cases produced no valid synthetic CT (first: "
                f"{case}); this phase's 'fail' policy requires every case.")
    return (f"metric '{metric}' failed (NaN or missing) for case {case}; this phase's 'fail' "
            "policy requires a valid value for every case.")


def _stats(
    per_metric: Mapping[str, Mapping[str, float]],
    cases: Sequence[str],
    scored: Sequence[str],
    policy: str,
    filled: Mapping[str, Sequence[str]],
) -> dict[str, object]:
    return {
        "per_metric": {m: dict(a) for m, a in per_metric.items()},
        "cases_total": len(cases),
        "cases_scored": len(scored),
        "policy": policy,
        "filled": {m: list(c) for m, c in filled.items()},
    }
