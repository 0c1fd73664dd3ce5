"""Radiotherapy structures and plans for the synthetic phantoms (every region).

The phantom label maps hold tissue classes, so the RT structures are drawn geometrically in
the same normalised coordinates the phantom generator uses ([-1, 1] along z, y, x): an
ellipsoidal PTV and 3-5 organs at risk placed where the case's layout puts them
(:mod:`evaluator.phantom_layout`: fixed, or varied per seed; the anatomy draws the organs
from the same ellipsoids).  An organ the region table restricts to one tissue class (femurs:
bone; lungs: air/lung) keeps only those voxels.  The structure map (``structures.mha``)
labels: 1 BODY, 2 PTV, 3.. OARs in the layout's order (PTV wins overlaps, later organs win
earlier ones).  Prescriptions and beam angles per region: :mod:`evaluator.phantom_regions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.dose.plan import PLAN_FILE, Beam, Plan, save_plan
from evaluator.phantom_layout import Layout, fixed_layout
from evaluator.phantom_regions import region

STRUCTURE_FILE = "structures.mha"
def _ellipsoid(shape: Sequence[int], centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    axes = [np.linspace(-1.0, 1.0, n).reshape([n if i == d else 1 for i in range(3)])
            for d, n in enumerate(shape)]
    r = sum(((a - c) / rr) ** 2 for a, c, rr in zip(axes, centre, radii, strict=True))
    return np.asarray(r < 1.0)


def make_phantom_structures(labels: np.ndarray, anatomy: str, layout: Layout | None = None,
                            ) -> tuple[np.ndarray, dict[str, int]]:
    """RT structure map (uint8) and its names for a phantom label map (z, y, x); ``layout``
    is the case's (``make_case(...)["layout"]``), the fixed one when not given."""
    layout = layout or fixed_layout(anatomy)
    only = region(anatomy).oar_class
    body = np.asarray(labels) > 0
    shape = labels.shape
    out = np.zeros(shape, dtype=np.uint8)
    out[body] = 1
    names = {"BODY": 1, "PTV": 2}
    ptv = _ellipsoid(shape, layout.ptv.centre, layout.ptv.radii) & body
    for k, (name, e) in enumerate(layout.oars.items()):
        mask = _ellipsoid(shape, e.centre, e.radii) & body & ~ptv
        if name in only:
            mask &= np.asarray(labels) == only[name]
        out[mask] = 3 + k
        names[name] = 3 + k
    out[ptv] = 2
    return out, names


# who steers and optimises the phantom plans
PLANNERS = ("torch_pb", "pyradplan")


def make_phantom_plans(
    labels: np.ndarray, spacing: Sequence[float], anatomy: str, layout: Layout | None = None,
) -> dict[str, Plan]:
    """Photon and proton plans (no weights yet) for a phantom; ``spacing`` is (x, y, z) mm.
    A varied ``layout`` also rotates the beams (by its ``beam_offset_deg``)."""
    layout = layout or fixed_layout(anatomy)
    structures, names = make_phantom_structures(labels, anatomy, layout)
    oars = [n for n in names if n not in ("BODY", "PTV") and (structures == names[n]).any()]
    grid = float(max(3.0, min(spacing)))
    turn = layout.beam_offset_deg

    def angles(base: list[float]) -> list[float]:
        return [round((a + turn) % 360.0, 3) for a in base]

    spec = region(anatomy)
    photon_angles = angles(list(spec.photon_angles))
    proton_angles = angles(list(spec.proton_angles))
    common: dict[str, Any] = {
        "target": "PTV", "structures": names, "oars": oars, "dose_grid_mm": grid,
        "structure_file": STRUCTURE_FILE, "ct_file": "ct.mha",
    }
    return {
        "photon": Plan(modality="photon", prescription_gy=spec.prescription_gy,
                       beams=[Beam(a) for a in photon_angles], bixel_width_mm=5.0, **common),
        "proton": Plan(modality="proton", prescription_gy=spec.prescription_gy,
                       beams=[Beam(a) for a in proton_angles], bixel_width_mm=6.0, **common),
    }


def write_phantom_plans(
    case_dir: str | Path,
    labels: np.ndarray,
    spacing: Sequence[float],
    anatomy: str,
    origin: Sequence[float] | None = None,
    ct_hu: np.ndarray | None = None,
    engines: Sequence[str] = ("torch_pb",),
    planner: str = "torch_pb",
    layout: Layout | None = None,
) -> dict[str, Path]:
    """Write ``structures.mha`` and ``plan_{photon,proton}.json`` into ``case_dir``.

    With ``ct_hu`` the plans' weights are optimised on it for each engine in ``engines``.
    ``planner="pyradplan"`` (optional extra) steers and optimises the plans with pyRadPlan
    instead and lists its beamlets in the plan, so torch_pb recomputes exactly pyRadPlan's
    plan (``engines`` is then ignored: the plan carries weights for both engines).
    """
    if planner not in PLANNERS:
        raise ValueError(f"planner must be one of {PLANNERS}, not {planner!r}")
    if planner == "pyradplan" and ct_hu is None:
        raise ValueError("planning with pyradplan needs the CT")
    import SimpleITK as sitk  # noqa: N813

    from evaluator.dose.engines import get_engine

    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    structures, _ = make_phantom_structures(labels, anatomy, layout)
    img: Any = sitk.GetImageFromArray(structures)
    img.SetSpacing(tuple(float(s) for s in spacing))
    if origin is not None:
        img.SetOrigin(tuple(float(o) for o in origin))
    sitk.WriteImage(img, str(case_dir / STRUCTURE_FILE), True)
    written = {}
    for modality, plan in make_phantom_plans(labels, spacing, anatomy, layout).items():
        if ct_hu is not None and planner == "pyradplan":
            from evaluator.dose.engines.pyradplan import PyRadPlanEngine

            plan = PyRadPlanEngine().plan_with_beamlets(ct_hu, spacing, plan, structures)
        elif ct_hu is not None:
            for name in engines:
                plan.weights[name] = get_engine(name).optimize(ct_hu, spacing, plan, structures)
        path = case_dir / PLAN_FILE[modality]
        save_plan(plan, path)
        written[modality] = path
    return written
