"""SynthRAD2025 geometry metrics (evaluator.segmentation.official): hand-computed cases, the
official edge cases, and bit-equality with MONAI called the way the official code calls it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator.errors import EvaluationInputError
from evaluator.segmentation.official import (
    NO_STRUCTURE_NOTE,
    STRUCTURES,
    geometry_metrics,
    region_code,
)


def test_structure_lists_are_the_official_label_ids() -> None:
    # segmentation_metrics.py of SynthRAD2025/evaluation @17cac47, lines 21-55.
    torso = [2, 3, 5, 6, 10, 11, 12, 13, 14, *range(26, 51), 51, 79, *range(92, 116), 116]
    assert list(STRUCTURES["TH"]) == torso and list(STRUCTURES["AB"]) == torso
    assert list(STRUCTURES["HN"]) == [15, 16, 17, *range(26, 51), 79, 90, 91]
    assert (len(STRUCTURES["HN"]), len(STRUCTURES["TH"])) == (31, 61)


def test_region_codes() -> None:
    assert region_code("Head and Neck") == "HN"
    assert region_code("thorax") == "TH" and region_code(" Abdomen ") == "AB"
    # The official code reads the anatomy from the case name (characters 2-3).
    assert region_code(None, "1THB012") == "TH" and region_code("", "2HNA001") == "HN"
    with pytest.raises(EvaluationInputError, match="region 'Brain'"):
        region_code("Brain", "1BA001")


def _labels(shape: tuple[int, int, int], boxes: dict[int, tuple[slice, ...]]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for label, box in boxes.items():
        out[box] = label
    return out


def test_hand_computed_dice_and_hd95() -> None:
    shape = (6, 6, 8)
    # liver (5): identical 2x2x2 cubes -> Dice 1, HD95 0. heart (51): single voxels 3 voxels
    # apart along x, spacing x = 2 mm -> Dice 0, HD95 6 mm. Means: 0.5 and 3.0.
    gt = _labels(shape, {5: np.s_[1:3, 1:3, 1:3], 51: np.s_[4, 4, 2]})
    pred = _labels(shape, {5: np.s_[1:3, 1:3, 1:3], 51: np.s_[4, 4, 5]})
    values, note = geometry_metrics(gt, pred, (1.0, 1.0, 2.0), "AB")
    assert values == {"dice": 0.5, "hd95": 3.0} and note == ""
    # Partial liver overlap: G = 8 voxels, P = 4 of them + 2 outside -> Dice 2*4/(8+6), in
    # float32; the heart is the ground truth's (Dice 1).
    pred2 = gt.copy()
    pred2[2, 1:3, 1:3] = 0
    pred2[1, 3, 1:3] = 5
    values, _ = geometry_metrics(gt, pred2, (1.0, 1.0, 1.0), "TH")
    assert values["dice"] == float((np.float32(8 / 14) + np.float32(1.0)) / np.float32(2))


def test_structures_outside_the_list_and_missing_ones() -> None:
    shape = (6, 6, 6)
    gt = _labels(shape, {5: np.s_[1:3, 1:3, 1:3], 1: np.s_[4:6, 4:6, 4:6],
                         90: np.s_[0:2, 4:6, 0:2]})
    # spleen (1) and brain (90) are not on the abdomen list: neither counts, even when wrong.
    pred = _labels(shape, {5: np.s_[1:3, 1:3, 1:3]})
    assert geometry_metrics(gt, pred, (1, 1, 1), "AB")[0] == {"dice": 1.0, "hd95": 0.0}
    # Liver missed entirely, heart perfect: Dice 0.5; the missed structure's HD95 is NaN in
    # MONAI (quantile of +inf distances) and drops out of the mean.
    gt2 = _labels(shape, {5: np.s_[1:3, 1:3, 1:3], 51: np.s_[4:6, 4:6, 4:6]})
    pred2 = _labels(shape, {51: np.s_[4:6, 4:6, 4:6]})
    assert geometry_metrics(gt2, pred2, (1, 1, 1), "AB")[0] == {"dice": 0.5, "hd95": 0.0}


def test_official_edge_cases_give_zero() -> None:
    shape = (5, 5, 5)
    gt = _labels(shape, {5: np.s_[1:3, 1:3, 1:3]})
    # Nothing of the list on the sCT: Dice 0 and HD95 0 (MONAI's mean of only NaN values).
    empty = np.zeros(shape, np.uint8)
    assert geometry_metrics(gt, empty, (1, 1, 1), "AB") == ({"dice": 0.0, "hd95": 0.0}, "")
    # No structure of the list in the ground truth: both 0, with the official warning's note.
    gt_other = _labels(shape, {1: np.s_[1:3, 1:3, 1:3]})
    assert geometry_metrics(gt_other, gt, (1, 1, 1), "HN") == (
        {"dice": 0.0, "hd95": 0.0}, NO_STRUCTURE_NOTE)
    with pytest.raises(EvaluationInputError, match="shape"):
        geometry_metrics(gt, gt[:4], (1, 1, 1), "AB")


def _blobs(shape: tuple[int, int, int], labels: list[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = np.indices(shape)
    out = np.zeros(shape, np.uint8)
    for label in labels:
        centre = rng.uniform(3, np.array(shape) - 3)
        radius = rng.uniform(1.5, 5.0)
        r2 = sum((gi - c) ** 2 for gi, c in zip(g, centre, strict=True))
        out[r2 < (radius + rng.normal(0, 0.7, shape)) ** 2] = label
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bit_identical_to_monai_as_the_official_code_calls_it(seed: int) -> None:
    monai = pytest.importorskip("monai.metrics")
    shape = (18, 21, 16)
    labels = [5, 6, 51, 79, 2, 1, 116]
    gt = _blobs(shape, labels, seed)
    pred = _blobs(shape, labels, seed + 100)
    pred[pred == 6] = 0  # one structure missed by the prediction
    spacing_zyx = (2.5, 0.8, 1.3)
    ours, _ = geometry_metrics(gt, pred, spacing_zyx, "AB")
    # segmentation_metrics.py lines 84-114, on (x, y, z) arrays with SimpleITK's spacing.
    gt_xyz = torch.from_numpy(gt.transpose(2, 1, 0).copy())
    pred_xyz = torch.from_numpy(pred.transpose(2, 1, 0).copy())
    dice = monai.DiceMetric(include_background=True, reduction="mean", get_not_nans=False)
    hd = monai.HausdorffDistanceMetric(include_background=True, reduction="mean", percentile=95,
                                       get_not_nans=False)
    with pytest.warns(UserWarning, match="prediction of class"):
        for c in STRUCTURES["AB"]:
            g = (gt_xyz == c).view(1, 1, *gt_xyz.shape)
            if g.sum() == 0:
                continue
            p = (pred_xyz == c).view(1, 1, *pred_xyz.shape)
            dice(p, g)
            hd(p, g, spacing=spacing_zyx[::-1])
    want = {"dice": dice.aggregate().item(), "hd95": hd.aggregate().item()}
    assert ours == want  # the same float32 bits
    assert 0.0 < ours["dice"] < 1.0 and ours["hd95"] > 0.0
