"""Dose metrics: recompute each case's plans on the sCT and compare with the CT dose.

Public API::

    dose_metrics_for_case(case_dir, sct_path, engine="torch_pb", cache_dir=None, device="cpu")
        -> {"mae_target_photon": ..., "dvh_photon": ..., "gamma_photon": ..., same for proton}

A case without plan files gets ``{}`` (no dose metrics, not zeros).  A plan that references
a missing structure, a missing CT, an sCT on another grid or a failing dose computation
raise :class:`DoseMetricsError` naming the case and the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.dose.engines import (
    DEFAULT_ENGINE,
    DoseComputationError,
    DoseEngine,
    StaleWeightsError,
    get_engine,
)
from evaluator.dose.gamma import GammaSettings, gamma_pass_rate
from evaluator.dose.metrics import dose_metrics, gamma_map
from evaluator.dose.plan import MODALITIES, PLAN_FILE, Plan, PlanError, load_plan
from evaluator.dose_products import CaseProducts
from evaluator.dose_products import build as build_products
from evaluator.errors import EvaluationInputError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ENGINE",
    "DoseMetricsError",
    "GammaSettings",
    "Plan",
    "PlanError",
    "dose_metrics_for_case",
    "dose_metrics_report",
    "gamma_pass_rate",
    "load_plan",
]


class DoseMetricsError(EvaluationInputError):
    """A case's dose metrics cannot be computed; the message says why."""


@dataclass
class DoseReport:
    metrics: dict[str, float] = field(default_factory=dict)
    gamma_settings: dict[str, Any] = field(default_factory=dict)
    engine: str = DEFAULT_ENGINE
    cached: dict[str, bool] = field(default_factory=dict)
    # The viewer's dose maps and DVHs (evaluator.dose_products), when asked for.
    products: CaseProducts | None = None


def _read(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import SimpleITK as sitk  # noqa: N813

    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    img: Any = sitk.ReadImage(str(path))
    sp = img.GetSpacing()
    return sitk.GetArrayFromImage(img), (float(sp[0]), float(sp[1]), float(sp[2]))


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:24]


def _cache_file(
    cache_dir: Path | None, plan_path: Path, plan: Plan, engine: DoseEngine, kind: str,
    ct: np.ndarray, spacing: Sequence[float], *extra: bytes,
) -> Path | None:
    """Where a case's cached ``kind`` ("dose.npy", "weights.json") lives: named by the case,
    modality and engine, keyed by the engine's model version, the plan and the CT."""
    if cache_dir is None:
        return None
    key = _digest(
        kind.encode(), engine.name.encode(), engine.model_version.encode(),
        json.dumps(plan.to_dict(), sort_keys=True).encode(),
        np.ascontiguousarray(ct).tobytes(), np.asarray(spacing).tobytes(), *extra,
    )
    return cache_dir / f"{plan_path.parent.name}_{plan.modality}_{engine.name}_{key}.{kind}"


def _store(cache_file: Path, write: Callable[[Path], object]) -> None:
    """Write to a temporary name, then rename: a killed worker never leaves half a file."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f".{cache_file.name}.tmp{cache_file.suffix}")
    write(tmp)
    tmp.replace(cache_file)


def _ct_dose(
    engine_name: str, plan: Plan, plan_path: Path, ct: np.ndarray,
    spacing: Sequence[float], structures: np.ndarray, cache_dir: Path | None, device: str,
) -> tuple[np.ndarray, bool]:
    """The plan's dose on the real CT, from the cache when it is there."""
    engine = get_engine(engine_name, device)
    cache_file = _cache_file(cache_dir, plan_path, plan, engine, "dose.npy", ct, spacing)
    if cache_file is not None and cache_file.is_file():
        return np.load(cache_file), True
    dose = engine.compute(ct, spacing, plan, structures, ct)
    if cache_file is not None:
        _store(cache_file, lambda tmp: np.save(tmp, dose))
    return dose, False


def _derived_weights(
    engine_name: str, plan: Plan, plan_path: Path, ct: np.ndarray,
    spacing: Sequence[float], structures: np.ndarray, cache_dir: Path | None, device: str,
    why: str,
) -> list[float]:
    """Weights optimised on the CT for a plan that lacks usable ones (deterministic), kept in
    the cache so that a case is optimised once, not once per submission."""
    engine = get_engine(engine_name, device)
    cache_file = _cache_file(cache_dir, plan_path, plan, engine, "weights.json", ct, spacing,
                             np.ascontiguousarray(structures).tobytes())
    if cache_file is not None and cache_file.is_file():
        try:
            weights = [float(w) for w in json.loads(cache_file.read_text())]
        except (ValueError, TypeError, OSError):
            log.warning("%s is unreadable: optimising again", cache_file)
        else:
            log.info("%s: %s; using the weights optimised earlier (%s)", plan_path, why,
                     cache_file.name)
            return weights
    log.warning("%s: %s; optimising on the CT now", plan_path, why)
    weights = engine.optimize(ct, spacing, plan, structures)
    if cache_file is not None:
        _store(cache_file, lambda tmp: tmp.write_text(json.dumps(weights)))
    return weights


def dose_metrics_report(
    case_dir: str | Path,
    sct_path: str | Path,
    engine: str = DEFAULT_ENGINE,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    gamma: GammaSettings | None = None,
    products: bool = False,
) -> DoseReport:
    """Dose metrics plus the settings they were computed with; with ``products``, also the
    viewer's compact dose maps and DVHs (``report.products``)."""
    case_dir, sct_path = Path(case_dir), Path(sct_path)
    gamma = gamma or GammaSettings()
    report = DoseReport(gamma_settings=gamma.to_dict(), engine=engine)
    if products:
        report.products = CaseProducts(engine=engine)
    cache = Path(cache_dir) if cache_dir is not None else None
    for modality in MODALITIES:
        plan_path = case_dir / PLAN_FILE[modality]
        if not plan_path.is_file():
            continue
        where = f"case {case_dir.name}, {modality} plan"
        try:
            plan = load_plan(plan_path)
            ct, spacing = _read(plan_path.parent / plan.ct_file)
            structures, st_spacing = _read(plan_path.parent / plan.structure_file)
            sct, sct_spacing = _read(sct_path)
            if structures.shape != ct.shape or not np.allclose(st_spacing, spacing, atol=1e-3):
                raise PlanError(f"structure map {plan.structure_file} is not on the CT grid")
            if sct.shape != ct.shape or not np.allclose(sct_spacing, spacing, atol=1e-3):
                raise DoseComputationError(
                    f"sCT grid {sct.shape[::-1]} @ {sct_spacing} differs from the CT grid "
                    f"{ct.shape[::-1]} @ {spacing}"
                )
            plan.check_structures(structures)
            ct32 = ct.astype(np.float32)
            if engine not in plan.weights:
                # weights belong in the plan (optimised once on the CT); derive them
                # deterministically if an older plan lacks them, and say so
                plan.weights[engine] = _derived_weights(
                    engine, plan, plan_path, ct32, spacing, structures, cache, device,
                    f"no {engine} weights")
            try:
                d_ct, hit = _ct_dose(engine, plan, plan_path, ct32, spacing, structures, cache,
                                     device)
            except StaleWeightsError as exc:
                # optimised by an older engine version (other steering): re-optimise on the
                # CT, deterministically, and say so; the CT-dose cache key covers the weights
                plan.weights[engine] = _derived_weights(
                    engine, plan, plan_path, ct32, spacing, structures, cache, device, str(exc))
                d_ct, hit = _ct_dose(engine, plan, plan_path, ct32, spacing, structures, cache,
                                     device)
            d_sct = get_engine(engine, device).compute(
                sct.astype(np.float32), spacing, plan, structures, ct32)
            if not np.all(np.isfinite(d_sct)):
                raise DoseComputationError("the dose on the sCT is not finite")
            oars = {name: structures == plan.structures[name] for name in plan.oars}
            target = plan.mask(structures, plan.target)
            # The map is computed once: the pass rate and the viewer's map are the same.
            g = gamma_map(d_ct, d_sct, spacing, gamma, device) if products else None
            report.metrics.update(dose_metrics(
                d_ct, d_sct, spacing, target, oars, plan.prescription_gy, modality, gamma,
                device, gamma_values=g))
            if report.products is not None and g is not None:
                try:
                    report.products.modalities[modality] = build_products(
                        d_ct, d_sct, g, spacing, plan.prescription_gy, (plan.target, target),
                        oars, gamma.to_dict())
                except Exception:  # the views are extras: never lose the metrics for them
                    log.exception("%s: dose views not built", where)
            report.cached[modality] = hit
        except (PlanError, DoseComputationError, FileNotFoundError, RuntimeError) as exc:
            raise DoseMetricsError(f"{where}: {exc}") from exc
    return report


def dose_metrics_for_case(
    case_dir: str | Path,
    sct_path: str | Path,
    engine: str = DEFAULT_ENGINE,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """The six dose metrics of one case (``{}`` when the case has no plans)."""
    return dose_metrics_report(case_dir, sct_path, engine, cache_dir, device).metrics
