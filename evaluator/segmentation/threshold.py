"""The phantom geometry profile: an HU-threshold segmenter and its per-structure metrics.

Not SynthRAD's method (that is :mod:`evaluator.segmentation.official` with TotalSegmentator):
phantoms carry air / soft tissue / bone label maps, and this segmenter needs no weights. The
sCT is segmented and compared, structure by structure, with the ground-truth label map.
Structures absent from the ground truth are not scored. A structure present in the ground
truth but missing from the prediction gets Dice 0 and the worst-case HD95
:func:`worst_case_hd95` (the diagonal of the image's physical extent), so a missed structure is
never rewarded and never a silent NaN. Metric names carry the tag ``hu`` (``dice_hu``,
``hd95_hu``, ``dice_hu_<structure>``) so a leaderboard never passes them off as SynthRAD's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage

from evaluator.errors import EvaluationInputError
from evaluator.io import Volume
from evaluator.segmentation.base import LabelArray

# The tag of this profile's metric names: dice_hu, hd95_hu, dice_hu_<structure>.
TAG = "hu"

# Classes of the built-in HU-threshold segmenter and of the phantom label maps.
THRESHOLD_LABELS: dict[int, str] = {1: "air", 2: "soft_tissue", 3: "bone"}
AIR_MAX_HU = -400.0  # below: air / lung
BONE_MIN_HU = 200.0  # above: bone (marrow ~300 HU, cortical ~1200 HU)


class ThresholdSegmenter:
    """Air / soft tissue / bone by HU thresholds inside the body mask; no weights needed."""

    name = "threshold"
    tag = TAG
    label = "HU threshold (phantom)"
    labels = THRESHOLD_LABELS

    def __init__(self, air_max_hu: float = AIR_MAX_HU, bone_min_hu: float = BONE_MIN_HU) -> None:
        self.air_max_hu = air_max_hu
        self.bone_min_hu = bone_min_hu

    def segment(self, ct: Volume, mask: Volume | None = None) -> LabelArray:
        hu = ct.array
        out = np.full(hu.shape, 2, dtype=np.uint8)
        out[hu < self.air_max_hu] = 1
        out[hu > self.bone_min_hu] = 3
        if mask is not None:
            out[mask.array <= 0] = 0
        return out


# ---------------------------------------------------------------------------------------


def dice(gt: LabelArray, pred: LabelArray) -> float:
    """2|A∩B| / (|A|+|B|) of two boolean arrays (NaN when both are empty)."""
    a, b = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    denom = int(a.sum()) + int(b.sum())
    return float("nan") if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom


def worst_case_hd95(shape: tuple[int, ...], spacing_zyx: tuple[float, ...]) -> float:
    """HD95 given to a structure missing from the prediction: the image diagonal in mm."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing_zyx, strict=True))))


def _surface(a: LabelArray) -> LabelArray:
    # Voxels of the structure that touch the background (6-connectivity); the image border
    # counts as background, as in MONAI's get_mask_edges.
    eroded = ndimage.binary_erosion(a, border_value=0)
    surface: LabelArray = np.logical_and(a, ~eroded)
    return surface


def hd95(gt: LabelArray, pred: LabelArray, spacing_zyx: tuple[float, ...]) -> float:
    """Symmetric 95th-percentile surface distance in mm: max of the two directed values.

    Both inputs must be non-empty. Works on the union bounding box (plus one voxel) only.
    """
    a, b = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if not a.any() or not b.any():
        raise ValueError("hd95 needs two non-empty structures")
    union = a | b
    box = []
    for d in range(union.ndim):
        idx = np.nonzero(union.any(axis=tuple(i for i in range(union.ndim) if i != d)))[0]
        box.append(slice(max(0, idx[0] - 1), min(union.shape[d], idx[-1] + 2)))
    a, b = a[tuple(box)], b[tuple(box)]
    sa, sb = _surface(a), _surface(b)
    da = ndimage.distance_transform_edt(~sb, sampling=spacing_zyx)[sa]
    db = ndimage.distance_transform_edt(~sa, sampling=spacing_zyx)[sb]
    return float(max(np.percentile(da, 95), np.percentile(db, 95)))


def per_structure_metrics(
    gt_labels: LabelArray,
    pred_labels: LabelArray,
    spacing_zyx: tuple[float, ...],
    labels: Iterable[int] | None = None,
) -> dict[int, dict[str, float]]:
    """``{label: {"dice", "hd95"}}`` for every label present in the ground truth."""
    gt = np.asarray(gt_labels)
    pred = np.asarray(pred_labels)
    if gt.shape != pred.shape:
        raise EvaluationInputError(
            f"predicted label map shape {pred.shape} differs from ground truth {gt.shape}"
        )
    present = [int(v) for v in np.unique(gt) if v != 0]
    wanted = present if labels is None else [v for v in labels if v in set(present)]
    worst = worst_case_hd95(gt.shape, spacing_zyx)
    out: dict[int, dict[str, float]] = {}
    for label in wanted:
        g, p = gt == label, pred == label
        if not p.any():
            out[label] = {"dice": 0.0, "hd95": worst}
            continue
        out[label] = {"dice": dice(g, p), "hd95": hd95(g, p, spacing_zyx)}
    return out


def segmentation_metrics(
    gt_labels: LabelArray,
    pred_labels: LabelArray,
    spacing_zyx: tuple[float, ...],
    labels: Iterable[int] | None = None,
    names: Mapping[int, str] | None = None,
    tag: str = "",
) -> dict[str, float]:
    """Mean Dice and HD95 over structures, plus ``dice_<name>``/``hd95_<name>`` per structure
    (with ``tag``: ``dice_<tag>``, ``dice_<tag>_<name>``, ...).

    Raises EvaluationInputError when the ground truth holds none of the requested labels.
    """
    per = per_structure_metrics(gt_labels, pred_labels, spacing_zyx, labels)
    if not per:
        raise EvaluationInputError("ground-truth label map contains no structure to score")
    dice_key, hd_key = (f"dice_{tag}", f"hd95_{tag}") if tag else ("dice", "hd95")
    result = {
        dice_key: float(np.mean([v["dice"] for v in per.values()])),
        hd_key: float(np.mean([v["hd95"] for v in per.values()])),
    }
    for label, v in per.items():
        name = (names or {}).get(label, str(label))
        result[f"{dice_key}_{name}"] = v["dice"]
        result[f"{hd_key}_{name}"] = v["hd95"]
    return result
