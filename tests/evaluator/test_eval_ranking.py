from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.metrics import METRICS, directions
from evaluator.ranking import (
    METHODS,
    aggregate,
    bootstrap_rank_stability,
    competition_ranks,
    rank_submissions,
    ranks_in_order,
)

NAN = float("nan")


def test_aggregate_matches_numpy_and_skips_nan():
    values = [3.0, 1.0, NAN, 4.0, None, 1.5, 9.0]
    nums = np.array([3.0, 1.0, 4.0, 1.5, 9.0])
    a = aggregate(values)
    assert a["count"] == 5
    assert a["mean"] == pytest.approx(nums.mean())
    assert a["std"] == pytest.approx(nums.std())
    assert a["median"] == 3.0
    assert a["p25"] == pytest.approx(np.percentile(nums, 25))
    assert a["p75"] == pytest.approx(np.percentile(nums, 75))
    assert (a["min"], a["max"]) == (1.0, 9.0)


def test_aggregate_of_nothing():
    a = aggregate([NAN, None])
    assert a["count"] == 0
    assert all(math.isnan(a[k]) for k in ("mean", "std", "median", "p25", "p75", "min", "max"))


def test_competition_ranks_ties_and_nan():
    r = competition_ranks({"a": 5.0, "b": 3.0, "c": 3.0, "d": NAN, "e": None, "f": 7.0}, False)
    assert r == {"b": 1, "c": 1, "a": 3, "f": 4, "d": 5, "e": 5}
    r = competition_ranks({"a": 5.0, "b": 3.0, "c": 5.0}, True)
    assert r == {"a": 1, "c": 1, "b": 3}


VALUES = {
    "s1": {"mae": 50.0, "ssim": 0.90, "psnr": 30.0},
    "s2": {"mae": 60.0, "ssim": 0.95, "psnr": 29.0},
    "s3": {"mae": 70.0, "ssim": 0.80, "psnr": 28.0},
}
DIRS = directions(["mae", "ssim", "psnr"])


def test_absolute():
    r = rank_submissions(VALUES, DIRS, "absolute", metric="ssim")
    assert [(x.submission_id, x.rank, x.score) for x in ranks_in_order(r)] == [
        ("s2", 1, 0.95), ("s1", 2, 0.90), ("s3", 3, 0.80)]


def test_mean_and_median_of_ranks():
    r = rank_submissions(VALUES, DIRS, "mean_rank")
    assert r["s1"].metric_ranks == {"mae": 1, "ssim": 2, "psnr": 1}
    assert r["s1"].score == pytest.approx(4 / 3)
    assert r["s2"].score == pytest.approx(5 / 3)
    assert [r[s].rank for s in ("s1", "s2", "s3")] == [1, 2, 3]
    m = rank_submissions(VALUES, DIRS, "median_rank")
    assert (m["s1"].score, m["s2"].score, m["s3"].score) == (1.0, 2.0, 3.0)


def test_equal_scores_share_rank():
    values = {"a": {"mae": 1.0, "ssim": 0.5}, "b": {"mae": 2.0, "ssim": 0.9},
              "c": {"mae": 3.0, "ssim": 0.1}}
    r = rank_submissions(values, directions(["mae", "ssim"]), "mean_rank")
    assert (r["a"].rank, r["b"].rank, r["c"].rank) == (1, 1, 3)


def test_synthrad_min_max_normalised_sum():
    r = rank_submissions(VALUES, DIRS, "synthrad")
    # s1: mae 1, ssim (0.90-0.80)/0.15, psnr 1 ; s2: mae 0.5, ssim 1, psnr 0.5 ; s3: 0
    assert r["s1"].score == pytest.approx(2 + 0.1 / 0.15)
    assert r["s2"].score == pytest.approx(2.0)
    assert r["s3"].score == 0.0
    assert [x.submission_id for x in ranks_in_order(r)] == ["s1", "s2", "s3"]
    same = rank_submissions({"a": {"mae": 1.0}, "b": {"mae": 1.0}}, {"mae": False}, "synthrad")
    assert same["a"].score == same["b"].score == 0.5 and same["a"].rank == same["b"].rank == 1


@pytest.mark.parametrize("method", METHODS)
def test_nan_or_missing_never_ranks_above_a_number(method):
    rng = np.random.default_rng(0)
    for _ in range(30):
        values = {f"s{i}": {m: float(rng.normal()) for m in DIRS} for i in range(5)}
        values["bad"] = {"mae": NAN, "ssim": NAN}  # psnr missing
        r = rank_submissions(values, DIRS, method, metric="mae")
        assert all(r["bad"].rank >= r[s].rank for s in values)
        assert r["bad"].rank == max(x.rank for x in r.values())


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown ranking method"):
        rank_submissions(VALUES, DIRS, "vibes")


def per_case(seed):
    rng = np.random.default_rng(seed)
    out = {}
    for s, mean in (("good", 40.0), ("mid", 60.0), ("close", 61.0)):
        out[s] = {f"c{i}": {"mae": float(mean + rng.normal(0, 5))} for i in range(12)}
    return out


def test_bootstrap_is_deterministic_and_sensible():
    data = per_case(1)
    a = bootstrap_rank_stability(data, {"mae": False}, n=200, seed=0)
    b = bootstrap_rank_stability(data, {"mae": False}, n=200, seed=0)
    assert a == b
    assert (a["good"].median_rank, a["good"].ci_low, a["good"].ci_high) == (1.0, 1.0, 1.0)
    # two nearly equal submissions swap places in some resamples
    assert a["mid"].ci_low == 2.0 and a["close"].ci_high == 3.0
    assert a["mid"].ci_high == 3.0 or a["close"].ci_low == 2.0


def test_bootstrap_missing_cases_count_as_nan():
    data = {"a": {"c1": {"mae": 1.0}, "c2": {"mae": 1.0}}, "b": {}}
    r = bootstrap_rank_stability(data, {"mae": False}, n=50, seed=3)
    assert r["a"].median_rank == 1.0 and r["b"].median_rank == 2.0
    assert bootstrap_rank_stability({}, {"mae": False}) == {}


def test_metric_registry():
    for key in ("mae", "psnr", "ssim", "ms_ssim", "dice", "hd95", "mae_target_photon",
                "dvh_photon", "gamma_photon", "mae_target_proton", "dvh_proton",
                "gamma_proton"):
        assert key in METRICS and METRICS[key].name == key
    lower = {"mae", "hd95", "hd95_hu", "mae_target_photon", "dvh_photon", "mae_target_proton",
             "dvh_proton"}
    for key, spec in METRICS.items():
        assert spec.higher_is_better == (key not in lower), key
    with pytest.raises(KeyError, match="unknown metric"):
        directions(["nope"])


def test_per_structure_metrics_inherit_the_direction_of_their_family() -> None:
    from evaluator.metrics import spec_for

    dice_bone, hd95_soft = spec_for("dice_bone"), spec_for("hd95_soft_tissue")
    assert dice_bone is not None and dice_bone.higher_is_better
    assert dice_bone.label == "Dice (bone)"
    assert hd95_soft is not None and not hd95_soft.higher_is_better
    assert hd95_soft.unit == "mm" and hd95_soft.label == "HD95 (soft tissue)"
    assert spec_for("dice_") is None and spec_for("nonsense") is None
    assert directions(["dice_air", "hd95_bone"]) == {"dice_air": True, "hd95_bone": False}
    with pytest.raises(KeyError, match="unknown metric 'dicey'"):
        directions(["dicey"])
