"""The dose products of a submission's case (``evaluator.dose_products``, stored by the
worker when the case is scored), read with a small cache, and what a viewer may see of them
(``backend.access.submission_view``: ``view.dose``, ``view.ground_truth``)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt
from sqlalchemy.orm import Session

from backend.access import SubmissionView
from backend.config import settings
from backend.errors import ForbiddenError, NotFoundError
from backend.models import Case, CaseRun, Phase, Submission, User
from backend.submissions import service
from evaluator import dose_products


@dataclass(frozen=True)
class CaseDose:
    sub: Submission
    phase: Phase
    view: SubmissionView
    case: Case
    run: CaseRun
    prediction: Path


def open_case(session: Session, user: User, submission_id: int, case_name: str) -> CaseDose:
    """A case whose dose views this viewer may open (403 where the phase hides them)."""
    sub, phase, view = service.open_submission(session, user, submission_id)
    if not view.dose:
        raise ForbiddenError("Per-case results (and their dose views) of this phase are hidden "
                             "from participants.")
    case, run = service.case_of(session, sub.id, case_name)
    if not run.prediction_path:
        raise NotFoundError(f"Case '{case_name}' has no synthetic CT, so no dose views.")
    return CaseDose(sub, phase, view, case, run, settings.data_dir / run.prediction_path)


_cache: OrderedDict[tuple[str, float], dict[str, npt.NDArray[Any]]] = OrderedDict()
_meta_cache: OrderedDict[tuple[str, float], dict[str, Any] | None] = OrderedDict()
_lock = threading.Lock()
_CACHE_SIZE = 8


def _key(path: Path) -> tuple[str, float] | None:
    try:
        return str(path), path.stat().st_mtime
    except OSError:
        return None


def meta_of(prediction: Path, case_name: str) -> dict[str, Any] | None:
    """The case's stored dose meta (grid, Rx, DVHs), or None when it has none."""
    path = dose_products.paths(prediction, case_name)[1]
    key = _key(path)
    if key is None:
        return None
    with _lock:
        if key in _meta_cache:
            return _meta_cache[key]
    meta = dose_products.read_meta(path)
    with _lock:
        _meta_cache[key] = meta
        while len(_meta_cache) > 256:
            _meta_cache.popitem(last=False)
    return meta


def arrays_of(prediction: Path, case_name: str) -> dict[str, npt.NDArray[Any]]:
    path = dose_products.paths(prediction, case_name)[0]
    key = _key(path)
    if key is None:
        raise NotFoundError("This case has no dose views (it has no plans, or is not scored).")
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    arrays = dose_products.read_arrays(path)
    with _lock:
        _cache[key] = arrays
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return arrays


def modality_meta(meta: dict[str, Any] | None, modality: str) -> dict[str, Any]:
    found = (meta or {}).get("modalities", {}).get(modality)
    if not isinstance(found, dict):
        raise NotFoundError(f"This case has no {modality} dose (no {modality} plan, or the "
                            "dose could not be computed).")
    return found




def dvh_data(meta: dict[str, Any] | None, ground_truth: bool) -> dict[str, Any]:
    """The stored DVHs per modality as the viewer may see them: without the reference CT's
    curves and points unless ``ground_truth``."""
    out: dict[str, Any] = {}
    for modality, m in (meta or {}).get("modalities", {}).items():
        structures = []
        for s in m.get("dvh", []):
            # Which OARs the DVH metric uses is chosen on the CT dose.
            item = {"name": s["name"], "role": s["role"],
                    "in_metric": s["in_metric"] if ground_truth else None,
                    "sct": s["sct"], "points": {"sct": s["points"]["sct"]}}
            if ground_truth:
                item["ct"] = s["ct"]
                item["points"]["ct"] = s["points"]["ct"]
            structures.append(item)
        gamma = m.get("gamma", {}) if ground_truth else {}
        out[modality] = {"rx_gy": m["rx_gy"], "dose_levels_gy": m["dose_levels_gy"],
                         "structures": structures, **({"gamma": gamma} if gamma else {})}
    return out
