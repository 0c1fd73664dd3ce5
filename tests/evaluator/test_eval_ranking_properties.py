"""Property tests (hypothesis) of the ranking methods and the aggregation over cases."""

from __future__ import annotations

import json
import math
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from evaluator.aggregation import aggregate, aggregate_submission, decode_metric, encode_metric
from evaluator.metrics import directions
from evaluator.ranking import METHODS, rank_submissions

METRICS = directions(["mae", "psnr", "ms_ssim", "dice"])
INF, NAN = math.inf, math.nan

# Few distinct values, so ties are common; ±inf, NaN and None (missing) included.
value = st.one_of(
    st.sampled_from([0.0, 1.0, 2.5, 3.0, INF, -INF]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([NAN, None]),
)
row = st.fixed_dictionaries({m: value for m in METRICS})
table = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), row, min_size=1,
                        max_size=8)
method = st.sampled_from(METHODS)


def ranks(values: dict[str, dict[str, float | None]], how: str) -> dict[str, tuple[int, bool]]:
    return {s: (r.rank, r.complete) for s, r in rank_submissions(values, METRICS, how).items()}


def complete(r: dict[str, float | None], how: str) -> bool:
    ranked = ["mae"] if how == "absolute" else list(METRICS)
    return all(r[m] is not None and not math.isnan(r[m]) for m in ranked)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(table, method, st.randoms())
def test_permutation_invariance(values, how, rnd):
    keys = list(values)
    rnd.shuffle(keys)
    shuffled = {k: dict(reversed(list(values[k].items()))) for k in keys}
    assert ranks(shuffled, how) == ranks(values, how)


@settings(max_examples=150, deadline=None)
@given(table, method)
def test_duplicate_rows_share_a_rank(values, how):
    original = next(iter(values))
    with_copy = {**values, "copy-of-" + original: dict(values[original])}
    got = ranks(with_copy, how)
    assert got["copy-of-" + original] == got[original]


@settings(max_examples=150, deadline=None)
@given(table, method)
def test_competition_ranks_and_incomplete_rows_last(values, how):
    got = ranks(values, how)
    done = {s: r for s, (r, c) in got.items() if c}
    assert set(done) == {s for s in values if complete(values[s], how)}
    for r in done.values():  # competition ranking: r - 1 rows rank strictly above
        assert r == 1 + sum(1 for x in done.values() if x < r)
    for r, c in got.values():
        if not c:
            assert r == len(done) + 1
            assert all(r > x for x in done.values())


@settings(max_examples=150, deadline=None)
@given(table, method)
def test_incomplete_rows_do_not_change_the_others(values, how):
    kept = {s: v for s, v in values.items() if complete(v, how)}
    got = ranks(values, how)
    assert ranks(kept, how) == {s: got[s] for s in kept}


@settings(max_examples=100, deadline=None)
@given(table)
def test_plus_inf_on_the_absolute_metric(values):
    vals = {**values, "perfect": {"mae": -INF, "psnr": INF, "ms_ssim": 1.0, "dice": 1.0}}
    # mae is lower-is-better: -inf is the best possible mean absolute error, psnr +inf likewise
    assert rank_submissions(vals, METRICS, "absolute")["perfect"].rank == 1
    by_psnr = rank_submissions(vals, {"psnr": True}, "absolute")
    assert by_psnr["perfect"].rank == 1


case_values = st.lists(
    st.one_of(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
              st.sampled_from([INF, NAN, None, 1e-300, 0.1])),
    max_size=40,
)


def bits(stats: dict[str, float]) -> dict[str, bytes]:
    return {k: struct.pack("<d", float(v)) for k, v in stats.items()}


@settings(max_examples=200, deadline=None)
@given(case_values, st.randoms())
def test_aggregate_is_bit_identical_under_permutation(values, rnd):
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert bits(aggregate(shuffled)) == bits(aggregate(values))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=4),
                       st.fixed_dictionaries({"mae": value, "psnr": value}), min_size=1,
                       max_size=12),
       st.sampled_from(["fail", "worst"]), st.randoms())
def test_aggregate_submission_is_order_independent(per_case, policy, rnd):
    cases = [*per_case, "never-scored"]
    keys = list(per_case)
    rnd.shuffle(keys)
    dirs = directions(["mae", "psnr"])
    penalties = {"mae": 1000.0, "psnr": 0.0}
    a = aggregate_submission(per_case, cases, dirs, policy, penalties=penalties)
    b = aggregate_submission({k: per_case[k] for k in keys}, list(reversed(cases)), dirs,
                             policy, penalties=penalties)
    assert a[2] == b[2]
    assert bits(a[0]) == bits(b[0])
    if policy == "fail":
        assert a[2] is not None  # "never-scored" has no values
    else:
        assert a[2] is None and a[1]["cases_total"] == len(set(cases))


@given(st.one_of(st.floats(), st.none()))
def test_encoding_round_trips_through_strict_json(v):
    text = json.dumps({"v": encode_metric(v)}, allow_nan=False)
    back = decode_metric(json.loads(text)["v"])
    if v is None:
        assert back is None
    elif math.isnan(v):
        assert back is not None and math.isnan(back)
    else:
        assert back == v and struct.pack("<d", back) == struct.pack("<d", v)
