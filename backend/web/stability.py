"""Bootstrap rank stability for the leaderboard page.

A cached adapter over ``evaluator.ranking.bootstrap_rank_stability`` (the one
implementation of the resampling), fed with the phase's ranked columns and method. Results
are cached per set of (submission, aggregate time) so a busy leaderboard does not recompute
on every view.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from backend.leaderboards.ranking import METHOD_NAMES, Column, groups_of, number
from backend.models import RankingMethod
from evaluator.ranking import bootstrap_rank_stability

Interval = tuple[float, float]
_cache: OrderedDict[tuple[object, ...], dict[int, Interval]] = OrderedDict()
_lock = threading.Lock()


def rank_intervals(
    per_case: Mapping[int, Mapping[int, Mapping[str, object]]],
    columns: Sequence[Column],
    method: RankingMethod,
    *,
    samples: int = 200,
    seed: int = 0,
    cache_key: tuple[object, ...] | None = None,
) -> dict[int, Interval]:
    """``per_case``: submission id -> case id -> metrics. Returns submission id -> (lo, hi)."""
    if cache_key is not None:
        with _lock:
            if cache_key in _cache:
                _cache.move_to_end(cache_key)
                return _cache[cache_key]
    cases = {c for m in per_case.values() for c in m}
    if len(per_case) < 2 or len(cases) < 2 or not columns:
        return {}
    ranked = columns[:1] if method is RankingMethod.ABSOLUTE else columns
    values = {
        str(s): {str(c): {col.metric: number(m.get(col.metric)) for col in ranked}
                 for c, m in by_case.items()}
        for s, by_case in per_case.items()
    }
    stability = bootstrap_rank_stability(
        values, {c.metric: c.higher_is_better for c in ranked}, METHOD_NAMES[method],
        ranked[0].metric, n=samples, seed=seed, groups=groups_of(ranked),
    )
    out = {int(s): (r.ci_low, r.ci_high) for s, r in stability.items()}
    if cache_key is not None:
        with _lock:
            _cache[cache_key] = out
            while len(_cache) > 64:
                _cache.popitem(last=False)
    return out
