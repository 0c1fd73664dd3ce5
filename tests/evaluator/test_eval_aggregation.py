"""Aggregation over cases under the case policy, non-finite values, and significance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from evaluator.aggregation import (
    aggregate,
    aggregate_submission,
    decode_metric,
    encode_metrics,
    worst_values,
)
from evaluator.metrics import DirectionError, directions, resolve_direction
from evaluator.ranking import rank_submissions
from evaluator.significance import adjacent_significance, holm

INF, NAN = math.inf, math.nan
DIRS = directions(["mae", "psnr"])
CASES = ["c1", "c2", "c3", "c4"]


def full(mae: list[float], psnr: list[float]) -> dict[str, dict[str, float]]:
    return {c: {"mae": m, "psnr": p} for c, m, p in zip(CASES, mae, psnr, strict=True)}


def test_fsum_mean_is_exact_where_a_naive_sum_is_not():
    values = [1e16, 1.0, -1e16, 1.0]
    assert sum(values) / 4 != 0.5  # the naive, order-dependent sum loses the ones
    assert aggregate(values)["mean"] == 0.5
    assert aggregate(list(reversed(values)))["mean"] == 0.5


def test_signed_zeros_do_not_make_the_order_matter():
    # Found by hypothesis: a stable sort kept 0.0/-0.0 in input order, so max differed in sign.
    a, b = aggregate([0.0, -0.0]), aggregate([-0.0, 0.0])
    assert [math.copysign(1.0, a[k]) for k in ("min", "max")] == [-1.0, 1.0]
    assert [math.copysign(1.0, b[k]) for k in ("min", "max")] == [-1.0, 1.0]


def test_inf_counts_as_a_value_and_nan_as_a_failure():
    a = aggregate([30.0, INF, 40.0, NAN, None])
    assert a["count"] == 3
    assert a["mean"] == INF and a["max"] == INF and a["std"] == INF
    assert a["median"] == 40.0 and a["min"] == 30.0
    assert a["p75"] == INF  # between 40 and inf: numpy would say NaN
    assert aggregate(["inf", "nan", 1.0])["count"] == 2  # stored strings are decoded


def test_fail_policy_fails_unless_every_case_is_valid():
    complete = full([10, 20, 30, 40], [30, 31, 32, 33])
    means, stats, error = aggregate_submission(complete, CASES, DIRS, "fail")
    assert error is None
    assert means == {"mae": 25.0, "psnr": 31.5}
    assert stats["cases_total"] == 4 and stats["cases_scored"] == 4 and stats["policy"] == "fail"
    skipped = {c: v for c, v in complete.items() if c != "c4"}  # the hardest case skipped
    _, stats, error = aggregate_submission(skipped, CASES, DIRS, "fail")
    assert error is not None and "c4" in error and "1 of 4" in error
    assert stats["cases_scored"] == 3
    nan_metric = {**complete, "c2": {"mae": 20.0, "psnr": NAN}}
    _, _, error = aggregate_submission(nan_metric, CASES, DIRS, "fail")
    assert error is not None and "psnr" in error and "c2" in error


def test_worst_policy_never_ranks_a_case_skipper_above_its_complete_copy():
    honest = full([10, 20, 30, 90], [35, 33, 31, 20])
    skipper = {c: v for c, v in honest.items() if c != "c4"}  # writes nothing for c4
    other = full([15, 25, 35, 80], [34, 32, 30, 22])
    worst = worst_values([honest, other], DIRS)
    assert worst["c4"] == {"mae": 90.0, "psnr": 20.0}
    m_honest, _, _ = aggregate_submission(honest, CASES, DIRS, "worst", worst=worst)
    m_skip, stats, err = aggregate_submission(skipper, CASES, DIRS, "worst", worst=worst)
    assert err is None and stats["filled"] == {"mae": ["c4"], "psnr": ["c4"]}
    assert m_skip == m_honest  # the skipped case took the worst value: here the honest one's
    # A subset mean would have ranked the skipper first on both metrics.
    subset = {"mae": np.mean([10, 20, 30]), "psnr": np.mean([35, 33, 31])}
    assert subset["mae"] < m_honest["mae"] and subset["psnr"] > m_honest["psnr"]
    for how in ("absolute", "mean_rank", "normalized_sum"):
        r = rank_submissions({"honest": m_honest, "skipper": m_skip}, DIRS, how)
        assert r["skipper"].rank >= r["honest"].rank


def test_worst_policy_uses_the_organisers_penalty_first_then_phase_wide_worst():
    scored = {c: v for c, v in full([10, 20, 30, 40], [30, 31, 32, 33]).items() if c != "c1"}
    # mae: the penalty; psnr: nobody else scored c1 -> its worst over the phase's cases
    worst = worst_values([scored], DIRS)
    means, _, err = aggregate_submission(scored, CASES, DIRS, "worst", worst=worst,
                                             penalties={"mae": 1000.0})
    assert err is None
    assert means["mae"] == (1000 + 20 + 30 + 40) / 4
    assert means["psnr"] == (31 + 31 + 32 + 33) / 4
    _, _, err = aggregate_submission(scored, CASES, DIRS, "worst")
    assert err is not None and "penalty" in err


def test_inf_psnr_mean_survives_storage_and_ranks_first():
    perfect = full([0, 0, 0, 0], [INF, INF, INF, INF])
    means, _, _ = aggregate_submission(perfect, CASES, DIRS, "fail")
    stored = encode_metrics(means)
    assert stored == {"mae": 0.0, "psnr": "inf"}
    back = {k: decode_metric(v) for k, v in stored.items()}
    r = rank_submissions({"perfect": back, "good": {"mae": 10.0, "psnr": 40.0}}, DIRS,
                         "absolute", metric="psnr")
    assert r["perfect"].rank == 1


def test_directions_cannot_be_inverted_and_custom_ones_must_be_declared():
    assert resolve_direction("psnr", None) is True
    assert resolve_direction("psnr", True) is True
    with pytest.raises(DirectionError, match="cannot be inverted"):
        resolve_direction("ms_ssim", False)  # SynthRAD2025's rank_teams.py treats it so
    with pytest.raises(DirectionError, match="declare"):
        resolve_direction("my_score", None)
    assert resolve_direction("my_score", False) is False


def test_grouped_normalized_sum_weights_groups_not_metrics():
    metrics = directions(["mae", "psnr", "ms_ssim", "dice"])
    values = {  # "img" wins all three image metrics, "seg" wins the one geometry metric
        "img": {"mae": 50.0, "psnr": 32.0, "ms_ssim": 0.95, "dice": 0.70},
        "seg": {"mae": 60.0, "psnr": 30.0, "ms_ssim": 0.90, "dice": 0.90},
    }
    plain = rank_submissions(values, metrics, "normalized_sum")
    grouped = rank_submissions(values, metrics, "grouped_normalized_sum")
    assert plain["img"].rank == 1 and plain["img"].score == 3.0
    assert grouped["img"].score == grouped["seg"].score == 0.5  # image and geometry weigh 1:1
    assert grouped["img"].rank == grouped["seg"].rank == 1


def test_holm_matches_the_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_adjacent_significance_uses_paired_wilcoxon_and_holm():
    rng = np.random.default_rng(0)
    base = rng.normal(60, 10, size=30)
    per_case = {
        "a": {f"c{i}": {"mae": float(v)} for i, v in enumerate(base)},
        "b": {f"c{i}": {"mae": float(v + 5 + rng.normal(0, 1))} for i, v in enumerate(base)},
        "b2": {f"c{i}": {"mae": float(v + 5 + rng.normal(0, 1))} for i, v in enumerate(base)},
        "same": {f"c{i}": {"mae": float(v + 5)} for i, v in enumerate(base)},
    }
    per_case["copy"] = dict(per_case["same"])
    tests = adjacent_significance(per_case, ["a", "b", "b2", "same", "copy"], ["mae"])
    assert [(t.upper, t.lower) for t in tests] == [("a", "b"), ("b", "b2"), ("b2", "same"),
                                                   ("same", "copy")]
    diffs = [per_case["a"][c]["mae"] - per_case["b"][c]["mae"] for c in per_case["a"]]
    assert tests[0].p_value == pytest.approx(wilcoxon(diffs).pvalue)
    assert tests[0].significant and tests[0].cases == 30
    assert not tests[1].significant  # two noisy copies of the same shift
    assert tests[3].p_value == 1.0 and not tests[3].significant  # identical
    assert all(t.p_holm >= t.p_value for t in tests)


def test_significance_with_an_infinite_difference():
    per_case = {"perfect": {f"c{i}": {"psnr": INF if i == 0 else 40.0 + i} for i in range(12)},
                "good": {f"c{i}": {"psnr": 30.0 + i} for i in range(12)}}
    (t,) = adjacent_significance(per_case, ["perfect", "good"], ["psnr"])
    assert t.cases == 12 and t.significant and math.isfinite(t.p_value)
