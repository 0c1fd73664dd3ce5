"""The dose products of a submission's case (``evaluator.dose_products``, stored by the
worker when the case is scored), read with a small cache, and what a viewer may see of them
(``backend.access.submission_view``: ``view.dose``, ``view.ground_truth``)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy.typing as npt
from sqlalchemy.orm import Session

from backend import object_cache
from backend.access import SubmissionView
from backend.errors import ForbiddenError, NotFoundError, ServiceUnavailableError
from backend.models import Case, CaseRun, Phase, Submission, User
from backend.storage import StorageUnavailableError
from backend.submissions import service
from evaluator import dose_products


@dataclass(frozen=True)
class CaseDose:
    sub: Submission
    phase: Phase
    view: SubmissionView
    case: Case
    run: CaseRun
    prediction: str  # the sCT's data-storage key (its dose products are stored beside it)


def open_case(session: Session, user: User, submission_id: int, case_name: str) -> CaseDose:
    """A case whose dose views this viewer may open (403 where the phase hides them)."""
    sub, phase, view = service.open_submission(session, user, submission_id)
    if not view.dose:
        raise ForbiddenError("Per-case results (and their dose views) of this phase are hidden "
                             "from participants.")
    case, run = service.case_of(session, sub.id, case_name)
    if not run.prediction_path:
        raise NotFoundError(f"Case '{case_name}' has no synthetic CT, so no dose views.")
    return CaseDose(sub, phase, view, case, run, run.prediction_path)


T = TypeVar("T")
# Keyed by the local file (a checked blob of the host's object cache, or the local storage's own
# file) and its mtime: a product written again is read again.
_arrays_cache: OrderedDict[tuple[str, float], Any] = OrderedDict()  # the 8 most recent
_meta_cache: OrderedDict[tuple[str, float], Any] = OrderedDict()  # the 256 most recent
_lock = threading.Lock()


def _cached_read(key: str, read: Callable[[Path], T],
                 cache: OrderedDict[tuple[str, float], Any], limit: int) -> T:
    """``read`` of the local copy of a data-storage object, remembered (the ``limit`` most
    recent of its kind). FileNotFoundError when there is no such object."""
    try:
        with object_cache.local_file(key) as path:
            ident = (str(path), path.stat().st_mtime)
            with _lock:
                if ident in cache:
                    cache.move_to_end(ident)
                    return cache[ident]  # type: ignore[no-any-return]
            value = read(path)
    except StorageUnavailableError as exc:
        raise ServiceUnavailableError(f"The dose views could not be read from the storage "
                                      f"({exc.strerror}); try again shortly.") from exc
    with _lock:
        cache[ident] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    return value


def meta_of(prediction: str, case_name: str) -> dict[str, Any] | None:
    """The case's stored dose meta (grid, Rx, DVHs), or None when it has none; ``prediction``
    is the sCT's storage key."""
    try:
        return _cached_read(dose_products.keys(prediction, case_name)[1],
                            dose_products.read_meta, _meta_cache, 256)
    except FileNotFoundError:
        return None


def arrays_of(prediction: str, case_name: str) -> dict[str, npt.NDArray[Any]]:
    try:
        return _cached_read(dose_products.keys(prediction, case_name)[0],
                            dose_products.read_arrays, _arrays_cache, 8)
    except FileNotFoundError:
        raise NotFoundError("This case has no dose views (it has no plans, or is not "
                            "scored).") from None


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
