"""Segmentation metrics (Dice, HD95) and pluggable segmenters for synthetic CTs.

The sCT is segmented by a :class:`Segmenter` and compared, structure by structure, with the
ground-truth label map of the CT. Structures absent from the ground truth are not scored. A
structure present in the ground truth but missing from the prediction gets Dice 0 and the
worst-case HD95 :func:`worst_case_hd95` (the diagonal of the image's physical extent), so a
missed structure is never rewarded and never a silent NaN.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from evaluator.errors import EvaluationInputError
from evaluator.io import Volume, read_volume, write_volume

LabelArray = np.ndarray[Any, Any]

# Classes of the built-in HU-threshold segmenter and of the phantom label maps.
THRESHOLD_LABELS: dict[int, str] = {1: "air", 2: "soft_tissue", 3: "bone"}
AIR_MAX_HU = -400.0  # below: air / lung
BONE_MIN_HU = 200.0  # above: bone (marrow ~300 HU, cortical ~1200 HU)


@runtime_checkable
class Segmenter(Protocol):
    """Turns a (synthetic) CT into an integer label map of the same shape (z, y, x)."""

    name: str

    def segment(self, ct: Volume, mask: Volume | None = None) -> LabelArray: ...


class ThresholdSegmenter:
    """Air / soft tissue / bone by HU thresholds inside the body mask; no weights needed."""

    name = "threshold"
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


class TotalSegmentatorSegmenter:
    """Adapter for TotalSegmentator (optional extra ``syntharena[totalsegmentator]``).

    Writes the sCT to a temporary NIfTI, runs ``totalsegmentator.python_api.totalsegmentator``
    in multi-label mode and reads the label map back. Model weights must already be in
    TotalSegmentator's cache (they cannot be downloaded inside the evaluation sandbox).
    """

    name = "totalsegmentator"

    def __init__(self, task: str = "total", fast: bool = False, device: str = "gpu",
                 roi_subset: list[str] | None = None) -> None:
        self.task = task
        self.fast = fast
        self.device = device
        self.roi_subset = roi_subset

    @staticmethod
    def _api() -> Any:
        try:
            from totalsegmentator import python_api
        except ImportError as exc:
            raise EvaluationInputError(
                "TotalSegmentator is not installed: pip install 'syntharena[totalsegmentator]' "
                "or use the threshold segmenter"
            ) from exc
        return python_api

    def segment(self, ct: Volume, mask: Volume | None = None) -> LabelArray:
        api = self._api()
        with tempfile.TemporaryDirectory(prefix="syntharena-ts-") as tmp:
            src = write_volume(Path(tmp) / "sct.nii.gz", ct.array.astype(np.float32), like=ct)
            dst = Path(tmp) / "labels.nii.gz"
            api.totalsegmentator(
                input=str(src), output=str(dst), ml=True, fast=self.fast, task=self.task,
                device=self.device, roi_subset=self.roi_subset, quiet=True,
            )
            labels = read_volume(dst)
        if labels.array.shape != ct.array.shape:
            raise EvaluationInputError(
                f"TotalSegmentator returned shape {labels.size}, expected {ct.size}"
            )
        out: LabelArray = labels.array.astype(np.int32)
        return out


SEGMENTERS: dict[str, type[ThresholdSegmenter] | type[TotalSegmentatorSegmenter]] = {
    "threshold": ThresholdSegmenter,
    "totalsegmentator": TotalSegmentatorSegmenter,
}


def make_segmenter(name: str) -> Segmenter:
    if name not in SEGMENTERS:
        raise EvaluationInputError(
            f"unknown segmenter {name!r} (expected one of {', '.join(SEGMENTERS)})"
        )
    return SEGMENTERS[name]()


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
) -> dict[str, float]:
    """Mean Dice and HD95 over structures, plus ``dice_<name>``/``hd95_<name>`` per structure.

    Raises EvaluationInputError when the ground truth holds none of the requested labels.
    """
    per = per_structure_metrics(gt_labels, pred_labels, spacing_zyx, labels)
    if not per:
        raise EvaluationInputError("ground-truth label map contains no structure to score")
    result = {
        "dice": float(np.mean([v["dice"] for v in per.values()])),
        "hd95": float(np.mean([v["hd95"] for v in per.values()])),
    }
    for label, v in per.items():
        name = (names or {}).get(label, str(label))
        result[f"dice_{name}"] = v["dice"]
        result[f"hd95_{name}"] = v["hd95"]
    return result
