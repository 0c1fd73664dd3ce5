"""Is the difference between adjacent ranks significant? (challengeR-style, pure function)

Per pair of neighbours in the ranking, a paired two-sided Wilcoxon signed-rank test over the
cases both scored: on the primary metric for ``absolute``, on every ranked metric for the
rank-aggregated methods. All p-values of one leaderboard form one family, Holm-corrected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy.stats import wilcoxon

from evaluator.aggregation import decode_metric

PerCase = Mapping[str, Mapping[str, Mapping[str, object]]]  # sub -> case -> metric -> value


@dataclass(frozen=True)
class PairTest:
    upper: str  # the better-ranked submission of the pair
    lower: str
    metric: str
    cases: int  # cases both submissions have a valid value for
    p_value: float  # raw two-sided p (1.0 when there is nothing to test)
    p_holm: float  # Holm-adjusted over every test of the leaderboard
    significant: bool  # p_holm < alpha


def _differences(a: Mapping[str, Mapping[str, object]], b: Mapping[str, Mapping[str, object]],
                 metric: str) -> list[float]:
    diffs = []
    for case in sorted(set(a) & set(b)):
        x, y = decode_metric(a[case].get(metric)), decode_metric(b[case].get(metric))
        if x is None or y is None or math.isnan(x) or math.isnan(y):
            continue
        if x == y:
            diffs.append(0.0)
        elif math.isinf(x) or math.isinf(y):
            diffs.append(math.inf if x > y else -math.inf)
        else:
            diffs.append(x - y)
    # The signed-rank test uses only signs and the ranks of |d|: an infinite difference
    # (one perfect PSNR) becomes one larger than every finite one, which keeps both.
    finite = [abs(d) for d in diffs if math.isfinite(d)]
    big = 2.0 * max(finite, default=1.0) + 1.0
    return [math.copysign(big, d) if math.isinf(d) else d for d in diffs]


def _wilcoxon_p(diffs: Sequence[float]) -> float:
    if not any(d != 0.0 for d in diffs):
        return 1.0  # identical on every shared case (or no shared case): no evidence
    return float(wilcoxon(np.asarray(diffs), zero_method="wilcox",
                          alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    adjusted = [1.0] * m
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def adjacent_significance(
    per_case: PerCase,
    order: Sequence[str],
    metrics: Sequence[str],
    alpha: float = 0.05,
) -> list[PairTest]:
    """Tests for each pair of neighbours in ``order`` (best first) on each of ``metrics``.

    ``per_case``: submission -> case -> metric -> value (stored strings such as "inf" are
    decoded). Pass the primary metric alone for ``absolute``, every ranked metric for the
    rank-aggregated methods.
    """
    raw: list[tuple[str, str, str, int, float]] = []
    for upper, lower in pairwise(order):
        for metric in metrics:
            diffs = _differences(per_case.get(upper, {}), per_case.get(lower, {}), metric)
            raw.append((upper, lower, metric, len(diffs), _wilcoxon_p(diffs)))
    adjusted = holm([r[4] for r in raw])
    return [PairTest(u, lo, m, n, p, q, q < alpha)
            for (u, lo, m, n, p), q in zip(raw, adjusted, strict=True)]
