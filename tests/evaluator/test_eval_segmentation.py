from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from evaluator.errors import EvaluationInputError
from evaluator.io import Volume
from evaluator.segmentation import (
    Segmenter,
    ThresholdSegmenter,
    TotalSegmentatorSegmenter,
    dice,
    hd95,
    make_segmenter,
    per_structure_metrics,
    segmentation_metrics,
    worst_case_hd95,
)


def brute_force_hd95(a, b, spacing):
    def surface_points(x):
        s = x & ~binary_erosion(x, border_value=0)
        return np.argwhere(s) * np.asarray(spacing)

    pa, pb = surface_points(a), surface_points(b)
    d = cdist(pa, pb)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def blob(shape, center, radius, seed):
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r = sum((gi - c) ** 2 for gi, c in zip(g, center, strict=True))
    return r < (radius + rng.normal(0, 0.8, shape)) ** 2


def test_dice_known_value():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros_like(a)
    a[0, 0, :4] = True
    b[0, 0, 2:] = True
    b[1, 1, 1] = True
    assert dice(a, b) == pytest.approx(2 * 2 / (4 + 3))
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 1.1)])
def test_hd95_matches_brute_force(spacing):
    a = blob((16, 18, 20), (8, 9, 9), 5, seed=1)
    b = blob((16, 18, 20), (9, 8, 11), 4, seed=2)
    assert hd95(a, b, spacing) == pytest.approx(brute_force_hd95(a, b, spacing), rel=1e-9)


def test_hd95_structure_touching_the_border():
    a = np.zeros((10, 10, 10), bool)
    a[:4, :5, :] = True
    b = np.zeros_like(a)
    b[:5, :5, :] = True
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(brute_force_hd95(a, b, (1, 1, 1)))


def test_missing_structure_gets_dice_zero_and_worst_case_hd95():
    gt = np.zeros((10, 12, 14), np.uint8)
    gt[2:5, 2:5, 2:5] = 1
    gt[6:9, 6:9, 6:9] = 2
    pred = np.where(gt == 1, 1, 0)
    per = per_structure_metrics(gt, pred, (2.0, 1.0, 1.0))
    worst = worst_case_hd95(gt.shape, (2.0, 1.0, 1.0))
    assert worst == pytest.approx(np.sqrt(20**2 + 12**2 + 14**2))
    assert per[2] == {"dice": 0.0, "hd95": worst}
    assert per[1]["dice"] == 1.0
    assert per[1]["hd95"] == 0.0
    mean = segmentation_metrics(gt, pred, (2.0, 1.0, 1.0), names={1: "a", 2: "b"})
    assert mean["dice"] == 0.5
    assert mean["hd95"] == pytest.approx(worst / 2)
    assert mean["dice_b"] == 0.0
    tagged = segmentation_metrics(gt, pred, (2.0, 1.0, 1.0), names={1: "a", 2: "b"}, tag="hu")
    assert tagged == {k.replace("dice", "dice_hu").replace("hd95", "hd95_hu"): v
                      for k, v in mean.items()}


def test_structures_absent_from_ground_truth_are_not_scored():
    gt = np.zeros((6, 6, 6), np.uint8)
    gt[1:4, 1:4, 1:4] = 1
    pred = gt.copy()
    pred[5, 5, 5] = 3  # extra structure in the prediction only
    assert set(per_structure_metrics(gt, pred, (1, 1, 1))) == {1}
    with pytest.raises(EvaluationInputError, match="no structure"):
        segmentation_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), (1, 1, 1))
    with pytest.raises(EvaluationInputError, match="shape"):
        per_structure_metrics(gt, pred[:5], (1, 1, 1))


def test_threshold_segmenter_classes_inside_the_mask():
    hu = np.array([-1000.0, -800.0, -100.0, 40.0, 300.0, 1200.0, 40.0]).reshape(1, 1, 7)
    mask = np.array([1, 1, 1, 1, 1, 1, 0]).reshape(1, 1, 7)
    seg = ThresholdSegmenter()
    assert isinstance(seg, Segmenter)
    out = seg.segment(Volume(hu), Volume(mask))
    assert out.ravel().tolist() == [1, 1, 2, 2, 3, 3, 0]


def test_make_segmenter(tmp_path):
    assert isinstance(make_segmenter("threshold"), ThresholdSegmenter)
    ts = make_segmenter("totalsegmentator", tmp_path)
    assert isinstance(ts, TotalSegmentatorSegmenter) and ts.weights_dir == tmp_path
    with pytest.raises(EvaluationInputError, match="unknown segmenter"):
        make_segmenter("magic")
