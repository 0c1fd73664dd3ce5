"""SynthRAD2025's geometry metrics: Dice and HD95 of TotalSegmentator structures.

Reproduces ``segmentation_metrics.py`` of SynthRAD2025/evaluation (commit 17cac47), which calls
MONAI's ``DiceMetric`` and ``HausdorffDistanceMetric(percentile=95)`` once per structure:

- the structures are the region's TotalSegmentator 'total' label ids (:data:`STRUCTURES`);
  a structure absent from the ground truth is skipped;
- Dice of one structure: ``2|G∩P| / (|G|+|P|)`` in float32 (0 when the prediction misses it);
- HD95 of one structure: surface voxels are the voxels of the mask with a 6-neighbour outside
  it (the image border counts as outside); distances in mm (Euclidean distance transform with
  the voxel spacing) from each surface voxel to the other mask's surface, as float32; the 95th
  percentile (linear interpolation) of each direction; the larger of the two;
- a structure missing from the prediction: Dice 0; HD95 NaN (MONAI's +inf distances make
  torch's quantile NaN), so it is left out of the HD95 mean;
- the case's values are the float32 means over the scored structures, NaN skipped, and 0
  when every value is NaN: a case where the sCT's segmentation misses every structure gets
  Dice 0 and HD95 0 (the official quirk, reproduced);
- a case whose ground truth holds none of the region's structures gets Dice 0 and HD95 0.

The arithmetic runs through the same torch operations as MONAI so the float32 results are the
same bits; ``tests/evaluator/test_eval_geometry.py`` checks this against MONAI itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from evaluator.errors import EvaluationInputError
from evaluator.segmentation.base import LabelArray

# TotalSegmentator 'total' label ids (dataset.json of Dataset297_TotalSegmentator_total_3mm).
KIDNEYS = (2, 3)  # kidney_right, kidney_left
LIVER, STOMACH = 5, 6
LUNG_LOBES = tuple(range(10, 15))  # upper/lower left, upper/middle/lower right
ESOPHAGUS, TRACHEA, THYROID = 15, 16, 17
VERTEBRAE = tuple(range(26, 51))  # S1 .. C1 (the sacrum, 25, is not counted)
HEART, SPINAL_CORD, BRAIN, SKULL = 51, 79, 90, 91
RIBS = tuple(range(92, 116))  # left 1-12, right 1-12
STERNUM = 116

_TORSO = (*KIDNEYS, LIVER, STOMACH, *LUNG_LOBES, *VERTEBRAE, HEART, SPINAL_CORD, *RIBS, STERNUM)
STRUCTURES: dict[str, tuple[int, ...]] = {
    "HN": (ESOPHAGUS, TRACHEA, THYROID, *VERTEBRAE, SPINAL_CORD, BRAIN, SKULL),
    "TH": _TORSO,
    "AB": _TORSO,
}
# Region names as datasets spell them (importer's REGION_NAMES) -> the official anatomy code.
_REGION_CODES = {"head and neck": "HN", "head_neck": "HN", "headneck": "HN", "hn": "HN",
                 "thorax": "TH", "th": "TH", "abdomen": "AB", "ab": "AB"}

NO_STRUCTURE_NOTE = ("the ground-truth segmentation holds none of the region's structures: "
                     "Dice and HD95 set to 0, as the SynthRAD2025 evaluation does")


def region_code(region: str | None, case_name: str | None = None) -> str:
    """The official anatomy code (HN, TH, AB) of a case: from its region, else from its
    SynthRAD2025 name (``1HNA001``: characters 2-3, as the official code reads it)."""
    if region and region.strip().lower() in _REGION_CODES:
        return _REGION_CODES[region.strip().lower()]
    if case_name and len(case_name) >= 3 and case_name[1:3].upper() in STRUCTURES:
        return case_name[1:3].upper()
    raise EvaluationInputError(
        f"SynthRAD2025 geometry metrics have structure lists for head and neck, thorax and "
        f"abdomen only; case {case_name or '?'} has region {region!r}. Use a phantom profile or "
        "no geometry metrics for this phase.")


def _edges(mask: LabelArray) -> LabelArray:
    # MONAI's get_mask_edges: erosion (6-connectivity, outside = background) XOR mask.
    edges: LabelArray = ndimage.binary_erosion(mask) ^ mask
    return edges


def _union_box(gt: LabelArray, pred: LabelArray) -> tuple[slice, ...]:
    union = gt | pred
    box = []
    for axis in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def dice_one(gt: LabelArray, pred: LabelArray) -> torch.Tensor:
    """MONAI's Dice of one structure (float32); NaN for an empty ground truth."""
    g, p = int(np.count_nonzero(gt)), int(np.count_nonzero(pred))
    if g == 0:
        return torch.tensor(float("nan"))
    inter = int(np.count_nonzero(gt & pred))
    return (2.0 * torch.tensor(inter)) / (torch.tensor(g) + torch.tensor(p))


def hd95_one(gt: LabelArray, pred: LabelArray, spacing: Sequence[float]) -> torch.Tensor:
    """MONAI's symmetric HD95 of one structure (float32, mm). ``spacing`` in the arrays' axis
    order. Both empty: NaN. One empty: MONAI's distances are +inf for every surface voxel of
    the other, and torch's quantile of those is NaN (inf - inf in its interpolation), so the
    structure drops out of the case's mean: computed the same way here."""
    if not gt.any() and not pred.any():
        return torch.tensor(float("nan"))
    # Cropping to the union's box changes no distance; padding by one voxel keeps the image
    # border counting as outside (MONAI pads the same way).
    box = _union_box(gt, pred)
    g = np.pad(gt[box], 1)
    p = np.pad(pred[box], 1)
    eg, ep = _edges(g), _edges(p)
    quantiles = []
    for src, dst in ((ep, eg), (eg, ep)):
        if not dst.any() or not src.any():
            # MONAI: +inf for each surface voxel of whichever mask is not empty.
            n = int(np.count_nonzero(src if src.any() else dst))
            d = np.full(n, np.inf, dtype=np.float32)
        else:
            d = ndimage.distance_transform_edt(~dst, sampling=spacing)[src].astype(np.float32)
        quantiles.append(torch.quantile(torch.from_numpy(d), 0.95))
    return torch.max(torch.stack(quantiles)).to(torch.float32)


def monai_mean(values: Sequence[torch.Tensor]) -> float:
    """MONAI's ``reduction="mean"`` over per-structure values (buffered as a (n, 1) float32
    tensor): NaN entries are left out; all NaN gives 0."""
    f = torch.stack([v.reshape(1).to(torch.float32) for v in values])  # (n, 1)
    nans = torch.isnan(f)
    not_nans = (~nans).sum(dim=1).float()
    f = torch.where(nans, torch.zeros_like(f), f)
    zero = torch.zeros(1, dtype=torch.float)
    f = torch.where(not_nans > 0, f.sum(dim=1).float() / not_nans, zero)
    count = (not_nans > 0).sum(dim=0).float()
    return float(torch.where(count > 0, f.sum(dim=0).float() / count, zero).item())


def geometry_metrics(
    gt_labels: LabelArray,
    pred_labels: LabelArray,
    spacing_zyx: Sequence[float],
    region: str,
) -> tuple[dict[str, float], str]:
    """``({"dice", "hd95"}, note)`` of one case: the official means over the structures of
    ``region`` (an anatomy code, see :func:`region_code`) found in the ground truth. The note
    is "" or says why both values are 0.

    Arrays are (z, y, x); the metrics run on their (x, y, z) transpose with the spacing in
    that order, as the official code does (the distance transform sums squares per axis).
    """
    gt = np.asarray(gt_labels)
    pred = np.asarray(pred_labels)
    if gt.shape != pred.shape:
        raise EvaluationInputError(
            f"predicted label map shape {pred.shape} differs from ground truth {gt.shape}")
    gt_xyz, pred_xyz = gt.transpose(2, 1, 0), pred.transpose(2, 1, 0)
    spacing_xyz = tuple(float(s) for s in reversed(spacing_zyx))
    gt_boxes = _label_boxes(gt_xyz)
    pred_boxes = _label_boxes(pred_xyz)
    dices: list[torch.Tensor] = []
    hds: list[torch.Tensor] = []
    for label in STRUCTURES[region]:
        gbox = gt_boxes.get(label)
        if gbox is None:
            continue  # not in the ground truth: not scored
        pbox = pred_boxes.get(label)
        box = gbox if pbox is None else tuple(
            slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(gbox, pbox,
                                                                             strict=True))
        # Every voxel of either mask lies in the box: counts and distances are the same.
        g, p = gt_xyz[box] == label, pred_xyz[box] == label
        dices.append(dice_one(g, p))
        hds.append(hd95_one(g, p, spacing_xyz))
    if not dices:
        return {"dice": 0.0, "hd95": 0.0}, NO_STRUCTURE_NOTE
    return {"dice": monai_mean(dices), "hd95": monai_mean(hds)}, ""


def _label_boxes(labels: LabelArray) -> dict[int, tuple[slice, ...]]:
    """Bounding box of every label > 0 present (scipy's find_objects on integer labels)."""
    arr = labels if labels.dtype.kind in "iu" else labels.astype(np.int64)
    if arr.size == 0 or int(arr.max(initial=0)) <= 0:
        return {}
    if arr.min() < 0:
        arr = np.where(arr < 0, 0, arr)
    boxes = ndimage.find_objects(arr)
    return {i + 1: b for i, b in enumerate(boxes) if b is not None}
