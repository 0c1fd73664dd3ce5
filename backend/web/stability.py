"""Bootstrap rank stability for the leaderboard page.

Cases are resampled with replacement; each resample re-aggregates every ranked submission
(mean over the drawn cases) and re-ranks them with the backend's own ``rank_rows``, so the
rules (ties share a rank, missing values never rank above numbers) are the leaderboard's.
The interval is the 2.5th–97.5th percentile of the ranks seen. Results are cached per set of
(submission, aggregate time) so a busy leaderboard does not recompute on every view.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

from backend.leaderboards.ranking import Column, rank_rows
from backend.models import RankingMethod

Interval = tuple[float, float]
_cache: OrderedDict[tuple[object, ...], dict[int, Interval]] = OrderedDict()
_lock = threading.Lock()


def _num(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return math.nan
    return float(v) if math.isfinite(v) else math.nan


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
    subs = list(per_case)
    cases = sorted({c for m in per_case.values() for c in m})
    if len(subs) < 2 or len(cases) < 2:
        return {}
    # values[s, c, m]; NaN where a case has no value.
    values = np.array(
        [[[_num(per_case[s].get(c, {}).get(col.metric)) for col in columns] for c in cases]
         for s in subs],
        dtype=float,
    )
    rng = np.random.default_rng(seed)
    ranks = np.full((samples, len(subs)), np.nan)
    for b in range(samples):
        idx = rng.integers(0, len(cases), len(cases))
        drawn = values[:, idx, :]
        with warnings.catch_warnings():
            # An all-NaN slice (no value for a metric) is an expected "missing" here.
            warnings.simplefilter("ignore", category=RuntimeWarning)
            means = np.nanmean(drawn, axis=1)  # (subs, metrics)
        rows: list[dict[str, object]] = [
            {col.metric: (None if math.isnan(means[i, j]) else float(means[i, j]))
             for j, col in enumerate(columns)}
            for i in range(len(subs))
        ]
        for i, r in enumerate(rank_rows(rows, columns, method)):
            if r.rank is not None:
                ranks[b, i] = r.rank
    out: dict[int, Interval] = {}
    for i, s in enumerate(subs):
        seen = ranks[:, i][~np.isnan(ranks[:, i])]
        if seen.size:
            out[s] = (float(np.percentile(seen, 2.5)), float(np.percentile(seen, 97.5)))
    if cache_key is not None:
        with _lock:
            _cache[cache_key] = out
            while len(_cache) > 64:
                _cache.popitem(last=False)
    return out
