"""Score one case or a whole directory of cases (files in, metrics out)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluator.errors import EvaluationInputError
from evaluator.image_metrics import PROFILE_SPECS, compute_image_metrics
from evaluator.io import check_geometry, read_volume
from evaluator.io import check_pair as _check_pair
from evaluator.ranking import aggregate
from evaluator.segmentation import Segmenter, ThresholdSegmenter, segmentation_metrics

PathLike = str | Path


def score_case(
    ct_path: PathLike,
    sct_path: PathLike,
    mask_path: PathLike,
    profile: str,
    labels_path: PathLike | None = None,
    device: str = "cpu",
    segmenter: Segmenter | None = None,
) -> dict[str, float]:
    """Image metrics of the sCT, plus ``dice``/``hd95`` (and per structure) when labels given.

    Raises EvaluationInputError (naming the file) for unreadable or mismatching input.
    """
    if profile not in PROFILE_SPECS:
        raise EvaluationInputError(
            f"unknown profile {profile!r} (expected one of {', '.join(PROFILE_SPECS)})"
        )
    ct, sct, mask = read_volume(ct_path), read_volume(sct_path), read_volume(mask_path)
    _check_pair(ct, sct, mask)
    result = compute_image_metrics(ct.array, sct.array, mask.array, profile, device=device)
    if labels_path is not None:
        labels = read_volume(labels_path)
        check_geometry(ct, labels, ref_name="CT", other_name="label map")
        seg = segmenter if segmenter is not None else ThresholdSegmenter()
        predicted = seg.segment(sct, mask)
        names = getattr(seg, "labels", None)
        result.update(
            segmentation_metrics(labels.array, predicted, ct.spacing[::-1], names=names)
        )
    return result


def find_prediction(pred_dir: Path, case: str) -> Path | None:
    """``PRED/<case>/sct.mha`` (any supported suffix) or ``PRED/<case>.mha``."""
    for suffix in (".mha", ".nii.gz", ".nii", ".mhd", ".nrrd"):
        for candidate in (pred_dir / case / f"sct{suffix}", pred_dir / f"{case}{suffix}"):
            if candidate.is_file():
                return candidate
    return None


def list_cases(gt_dir: Path) -> list[str]:
    """Case directories of a dataset: sub-directories holding ``ct.mha`` and ``mask.mha``."""
    if not gt_dir.is_dir():
        raise EvaluationInputError(f"{gt_dir}: ground-truth directory not found")
    cases = sorted(p.name for p in gt_dir.iterdir()
                   if (p / "ct.mha").is_file() and (p / "mask.mha").is_file())
    if not cases:
        raise EvaluationInputError(
            f"{gt_dir}: no cases found (expected {gt_dir}/<case>/ct.mha and mask.mha)"
        )
    return cases


def score_dir(
    gt_dir: PathLike,
    pred_dir: PathLike,
    profile: str,
    device: str = "cpu",
    segmenter: Segmenter | None = None,
    use_labels: bool = True,
    progress: bool = False,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score every case of ``gt_dir`` against ``pred_dir``.

    Returns ``{"profile", "cases": {case: metrics}, "aggregates": {metric: stats},
    "errors": {case: message}}``; a case that cannot be scored is reported in ``errors``.
    """
    gt, pred = Path(gt_dir), Path(pred_dir)
    if not pred.is_dir():
        raise EvaluationInputError(f"{pred}: prediction directory not found")
    cases = list_cases(gt)
    results: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    iterator: Any = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="scoring", unit="case", file=sys.stderr)
    for case in iterator:
        if on_case is not None:
            on_case(case)
        sct = find_prediction(pred, case)
        if sct is None:
            errors[case] = f"no prediction found for case {case} in {pred}"
            continue
        labels = gt / case / "labels.mha"
        try:
            results[case] = score_case(
                gt / case / "ct.mha", sct, gt / case / "mask.mha", profile,
                labels_path=labels if use_labels and labels.is_file() else None,
                device=device, segmenter=segmenter,
            )
        except EvaluationInputError as exc:
            errors[case] = str(exc)
    keys: list[str] = []
    for metrics in results.values():
        keys += [k for k in metrics if k not in keys]
    aggregates = {k: aggregate(m.get(k) for m in results.values()) for k in keys}
    return {"profile": profile, "cases": results, "aggregates": aggregates, "errors": errors}
