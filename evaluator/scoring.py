"""Score one case or a whole directory of cases (files in, metrics out)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evaluator.errors import EvaluationInputError
from evaluator.image_metrics import compute_image_metrics
from evaluator.io import Volume, check_geometry, read_volume
from evaluator.io import check_pair as _check_pair
from evaluator.profiles import label_map_stem
from evaluator.profiles import profile as scoring_profile
from evaluator.ranking import aggregate
from evaluator.segmentation import (
    Segmenter,
    SegmenterUnavailableError,
    TotalSegmentatorSegmenter,
    make_segmenter,
    segmentation_metrics,
)

PathLike = str | Path
CaseScore = dict[str, Any]  # metric -> float; plus "geometry_error"/"geometry_note" texts

log = logging.getLogger(__name__)


def score_case(
    ct_path: PathLike,
    sct_path: PathLike,
    mask_path: PathLike,
    profile: str,
    labels_path: PathLike | None = None,
    device: str = "cpu",
    segmenter: Segmenter | None = None,
    *,
    region: str | None = None,
    case_name: str | None = None,
    weights_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    geometry: bool = True,
) -> CaseScore:
    """Image metrics of the sCT, plus the profile's geometry metrics (see
    :mod:`evaluator.profiles`; ``segmenter`` overrides the profile's).

    TotalSegmentator geometry (``dice``, ``hd95``) compares the sCT's segmentation with the
    dataset's (``labels_path``) or, without one, with the CT's (cached under ``cache_dir``);
    ``region``/``case_name`` pick the structure list. HU-threshold geometry (``dice_hu``, ...)
    needs ``labels_path``; ``geometry=False``: image metrics only. A geometry failure never
    loses the image metrics: the case keeps them and ``geometry_error`` says why.

    Raises EvaluationInputError (naming the file) for unreadable or mismatching input.
    """
    spec = scoring_profile(profile)
    ct, sct, mask = read_volume(ct_path), read_volume(sct_path), read_volume(mask_path)
    _check_pair(ct, sct, mask)
    result: CaseScore = dict(
        compute_image_metrics(ct.array, sct.array, mask.array, spec.image, device=device))
    if not geometry:
        return result
    if segmenter is None and spec.segmenter is not None:
        segmenter = make_segmenter(spec.segmenter, weights_dir)
    if segmenter is None:
        return result
    labels = None if labels_path is None else Path(labels_path)
    try:
        if isinstance(segmenter, TotalSegmentatorSegmenter):
            result.update(_totalsegmentator_geometry(
                ct, sct, labels, segmenter, region, case_name,
                None if cache_dir is None else Path(cache_dir)))
        elif labels is not None:
            result.update(_labelled_geometry(ct, sct, mask, labels, segmenter))
    except Exception as exc:  # geometry is one group: the case keeps its other metrics
        if not isinstance(exc, EvaluationInputError | SegmenterUnavailableError):
            log.exception("geometry metrics failed for %s", sct_path)
        reason = str(exc) if str(exc) else type(exc).__name__
        result["geometry_error"] = f"Geometry metrics ({segmenter.name}) not computed: {reason}"[
            :500]
    return result


def _totalsegmentator_geometry(
    ct: Volume, sct: Volume, labels: Path | None, segmenter: TotalSegmentatorSegmenter,
    region: str | None, case_name: str | None, cache_dir: Path | None,
) -> CaseScore:
    from evaluator.segmentation.ground_truth import reference_labels
    from evaluator.segmentation.official import geometry_metrics, region_code

    code = region_code(region, case_name)
    segmenter.check()
    # The official evaluation imposes the CT's spacing, origin and direction on the sCT (the
    # sizes match: checked above) before segmenting it.
    on_ct = Volume(sct.array, spacing=ct.spacing, origin=ct.origin, direction=ct.direction)
    reference, _ = reference_labels(ct, labels, segmenter, cache_dir)
    predicted = segmenter.segment(on_ct)
    values, note = geometry_metrics(reference, predicted, ct.spacing[::-1], code)
    out: CaseScore = dict(values)
    if note:
        out["geometry_note"] = note
    return out


def _labelled_geometry(ct: Volume, sct: Volume, mask: Volume, labels_path: Path,
                       segmenter: Segmenter) -> CaseScore:
    labels = read_volume(labels_path)
    check_geometry(ct, labels, ref_name="CT", other_name="label map")
    predicted = segmenter.segment(sct, mask)
    names = getattr(segmenter, "labels", None)
    return dict(segmentation_metrics(labels.array, predicted, ct.spacing[::-1], names=names,
                                     tag=getattr(segmenter, "tag", segmenter.name)))


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
    weights_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
) -> dict[str, Any]:
    """Score every case of ``gt_dir`` against ``pred_dir``; a case's ground-truth label map is
    the one the segmenter compares with (:func:`evaluator.profiles.label_map_stem`):
    ``GT/<case>/segmentation.mha`` (SynthRAD2025's, TotalSegmentator ids) or ``labels.mha``
    (the phantoms' 3 classes); its structure list comes from its SynthRAD2025 name
    (``1HNA001``).

    Returns ``{"profile", "cases": {case: metrics}, "aggregates": {metric: stats},
    "errors": {case: message}}``; a case that cannot be scored is reported in ``errors``.
    """
    gt, pred = Path(gt_dir), Path(pred_dir)
    stem = label_map_stem(segmenter.name if segmenter is not None
                          else scoring_profile(profile).segmenter)
    if not pred.is_dir():
        raise EvaluationInputError(f"{pred}: prediction directory not found")
    cases = list_cases(gt)
    results: dict[str, CaseScore] = {}
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
        labels = next((gt / case / f"{stem}{ext}" for ext in (".mha", ".nii.gz")
                       if stem and (gt / case / f"{stem}{ext}").is_file()), None)
        try:
            results[case] = score_case(
                gt / case / "ct.mha", sct, gt / case / "mask.mha", profile,
                labels_path=labels, device=device, segmenter=segmenter, case_name=case,
                weights_dir=weights_dir, cache_dir=cache_dir, geometry=use_labels,
            )
        except EvaluationInputError as exc:
            errors[case] = str(exc)
    keys: list[str] = []
    for metrics in results.values():
        keys += [k for k, v in metrics.items() if k not in keys and not isinstance(v, str)]
    aggregates = {k: aggregate(m.get(k) for m in results.values()) for k in keys}
    return {"profile": profile, "cases": results, "aggregates": aggregates, "errors": errors}
