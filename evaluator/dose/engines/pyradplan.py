"""Reference engine: pyRadPlan (matRad in Python), optional, in its own virtualenv.

Where pyRadPlan cannot be imported (the platform's environment), each call runs in pyRadPlan's
own virtualenv as a subprocess (:mod:`evaluator.dose.engines.pyradplan_remote`, which also
says how to create it); the adapter below is the same code on both sides.

Photons use pyRadPlan's SVD pencil beam on its ``Generic`` 6 MV machine, protons its Hong
pencil beam on the ``Generic`` proton machine; HU are converted with the same default HLUT
as the own engine (see hlut.py).  Steering (rays, and for protons the energies) is always
generated on the planning CT, so the stored weights apply unchanged to any sCT.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from evaluator.dose.engines import pyradplan_remote as remote
from evaluator.dose.engines.base import DoseComputationError, StaleWeightsError
from evaluator.dose.optimize import OAR_MAX_FRACTION, OAR_PENALTY, TARGET_PENALTY
from evaluator.dose.plan import Plan

log = logging.getLogger(__name__)


def in_process() -> bool:
    """pyRadPlan importable here (its own environment, or a development install)."""
    try:
        import pyRadPlan  # noqa: F401
    except ImportError:
        return False
    return True


def available() -> bool:
    """The reference engine can run: here, or in its own virtualenv."""
    return in_process() or remote.reference_python() is not None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyradplan")
    except PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pyRadPlan writes progress bars; keep them out of the CLI's JSON output."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class PyRadPlanEngine:
    name = "pyradplan"
    model_version = "1"

    def __init__(self) -> None:
        if not available():
            raise DoseComputationError(f"the pyradplan engine is not installed. "
                                       f"{remote.INSTALL_HINT}")
        self.remote = not in_process()
        # its defaults (generator, engine, solver fallback) are announced as warnings
        logging.getLogger("pyRadPlan").setLevel(logging.ERROR)

    @staticmethod
    def isocenter(plan: Plan, labels: np.ndarray, spacing: Sequence[float]) -> list[float]:
        if plan.isocenter_mm is not None:
            return [float(v) for v in plan.isocenter_mm]
        zi, yi, xi = np.nonzero(plan.mask(labels, plan.target))
        return [float(xi.mean() * spacing[0]), float(yi.mean() * spacing[1]),
                float(zi.mean() * spacing[2])]

    def _build(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> tuple[Any, Any, Any]:
        import SimpleITK as sitk  # noqa: N813
        from pyRadPlan import IonPlan, PhotonPlan, validate_cst, validate_ct
        from pyRadPlan.cst import create_voi

        img: Any = sitk.GetImageFromArray(np.asarray(ct_hu, dtype=np.float32))
        img.SetSpacing(tuple(float(s) for s in spacing))
        img.SetOrigin((0.0, 0.0, 0.0))
        ct = validate_ct(cube_hu=img)
        rx = plan.prescription_gy
        vois = []
        for name, value in plan.structures.items():
            mask = np.asarray(labels) == value
            if not mask.any():
                if name == plan.target or name in plan.oars:
                    plan.mask(labels, name)  # raises the clear PlanError
                continue
            m: Any = sitk.GetImageFromArray(mask.astype(np.uint8))
            m.CopyInformation(img)
            if name == plan.target:
                objectives = [{"name": "Squared Deviation", "d_ref": rx,
                               "penalty": TARGET_PENALTY}]
                kind = "TARGET"
            elif name in plan.oars:
                objectives = [{"name": "Squared Overdosing", "d_max": OAR_MAX_FRACTION * rx,
                               "penalty": OAR_PENALTY}]
                kind = "OAR"
            else:
                objectives, kind = [], "OAR"
            vois.append(create_voi(name=name, voi_type=kind, mask=m, ct_image=ct,
                                   objectives=objectives))
        cst = validate_cst({"vois": vois}, ct=ct)
        pln: Any
        if plan.modality == "photon":
            pln = PhotonPlan(machine="Generic")
        else:
            pln = IonPlan(radiation_mode="protons", machine="Generic")
        pln.prescribed_dose = rx
        pln.num_of_fractions = plan.fractions
        pln.prop_stf = {
            "gantry_angles": [b.gantry_deg for b in plan.beams],
            "couch_angles": [b.couch_deg for b in plan.beams],
            "bixel_width": plan.bixel_width_mm,
            "iso_center": self.isocenter(plan, labels, spacing),
        }
        g = plan.dose_grid_mm
        pln.prop_dose_calc = {"dose_grid": {"resolution": {"x": g, "y": g, "z": g}}}
        return ct, cst, pln

    def steering(
        self, planning_ct: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> Any:
        from pyRadPlan import generate_stf

        ct, cst, pln = self._build(planning_ct, spacing, plan, labels)
        with _quiet():
            return generate_stf(ct, cst, pln)

    def compute(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        planning_ct_hu: np.ndarray | None = None, weights: Sequence[float] | None = None,
    ) -> np.ndarray:
        w = weights if weights is not None else plan.weights.get(self.name)
        if w is None:
            raise DoseComputationError("plan has no 'pyradplan' weights; optimise it first")
        if self.remote:
            arrays = {"ct": ct_hu, "labels": labels, "weights": np.asarray(w, np.float64)}
            if planning_ct_hu is not None:
                arrays["planning"] = planning_ct_hu
            return np.asarray(remote.call("compute", arrays, plan, spacing), np.float32)
        import SimpleITK as sitk  # noqa: N813
        from pyRadPlan import calc_dose_forward

        stf = self.steering(
            planning_ct_hu if planning_ct_hu is not None else ct_hu, spacing, plan, labels
        )
        if plan.beamlets is not None:
            self._check_beamlets(stf, plan)
        if stf.total_number_of_bixels != len(w):
            raise StaleWeightsError(
                f"plan stores {len(w)} pyradplan weights but the steering has "
                f"{stf.total_number_of_bixels}; re-optimise the plan"
            )
        ct, cst, pln = self._build(ct_hu, spacing, plan, labels)
        try:
            with _quiet():
                result = calc_dose_forward(ct, cst, stf, pln, np.asarray(w, dtype=np.float64))
        except Exception as exc:  # the reference engine's failures become per-case errors
            raise DoseComputationError(f"pyRadPlan dose calculation failed: {exc}") from exc
        return np.asarray(sitk.GetArrayFromImage(result["physical_dose"]), dtype=np.float32)

    def optimize(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> list[float]:
        if self.remote:
            return [float(x) for x in remote.call(
                "optimize", {"ct": ct_hu, "labels": labels}, plan, spacing)]
        return self._optimize(ct_hu, spacing, plan, labels)[0]

    def _optimize(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> tuple[list[float], Any]:
        """Optimised weights and the steering they belong to."""
        import SimpleITK as sitk  # noqa: N813
        from pyRadPlan import calc_dose_influence, fluence_optimization

        ct, cst, pln = self._build(ct_hu, spacing, plan, labels)
        stf = self.steering(ct_hu, spacing, plan, labels)
        with _quiet():
            dij = calc_dose_influence(ct, cst, stf, pln)
            w = np.asarray(fluence_optimization(ct, cst, stf, dij, pln), dtype=np.float64)
            dose = sitk.GetArrayFromImage(dij.compute_result_ct_grid(w)["physical_dose"])
        target = plan.mask(labels, plan.target)
        w *= plan.prescription_gy / max(float(dose[target].mean()), 1e-12)
        return [float(x) for x in w], stf

    @staticmethod
    def _steered(stf: Any) -> list[dict[str, np.ndarray]]:
        out = []
        for beam in stf.beams:
            pos, energy = [], []
            for ray in beam.rays:
                for beamlet in ray.beamlets:
                    pos.append(np.asarray(ray.ray_pos_bev, dtype=np.float64))
                    energy.append(float(beamlet.energy))
            out.append({"pos_bev": np.array(pos).reshape(-1, 3), "energy": np.array(energy)})
        return out

    def _check_beamlets(self, stf: Any, plan: Plan) -> None:
        """pyRadPlan regenerates its steering from the planning CT; a plan listing other
        beamlets (edited, or steered elsewhere) cannot be recomputed here."""
        assert plan.beamlets is not None
        for n, (mine, listed) in enumerate(zip(self._steered(stf), plan.beamlets, strict=True)):
            same = len(mine["energy"]) == len(listed["u_mm"]) and np.allclose(
                mine["pos_bev"][:, 0], listed["u_mm"], atol=1e-3) and np.allclose(
                mine["pos_bev"][:, 2], listed["v_mm"], atol=1e-3)
            if same and plan.modality == "proton" and "energy_mev" in listed:
                same = np.allclose(mine["energy"], listed["energy_mev"], atol=1e-3)
            if not same:
                raise DoseComputationError(
                    f"beam {n}: the plan's listed beamlets are not the ones pyRadPlan steers "
                    "on the planning CT; the pyradplan engine can only recompute its own "
                    "steering"
                )

    def plan_with_beamlets(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> Plan:
        """A copy of ``plan`` steered and optimised by pyRadPlan on ``ct_hu``, its beamlets
        listed in the plan so the torch_pb engine recomputes exactly them with the same
        weights (SynthRAD's procedure: plan once in the planning system, recompute sCTs)."""
        import dataclasses

        if self.remote:
            done = Plan.from_dict(remote.call("plan_with_beamlets",
                                              {"ct": ct_hu, "labels": labels}, plan, spacing))
            return dataclasses.replace(done, weights={**plan.weights, **done.weights})
        bare = dataclasses.replace(plan, beamlets=None, beamlet_source=None,
                                   weights=dict(plan.weights))
        w, stf = self._optimize(ct_hu, spacing, bare, labels)
        beamlets: list[dict[str, list[float]]] = []
        for beam in self._steered(stf):
            entry = {"u_mm": beam["pos_bev"][:, 0].tolist(),
                     "v_mm": beam["pos_bev"][:, 2].tolist()}
            if plan.modality == "proton":
                entry["range_mm"] = self.ranges_mm(beam["energy"]).tolist()
                entry["energy_mev"] = beam["energy"].tolist()
            beamlets.append(entry)
        return dataclasses.replace(
            bare, beamlets=beamlets, beamlet_source=f"pyradplan {_version()} steering",
            weights={**plan.weights, self.name: w, "torch_pb": list(w)},
        )

    @staticmethod
    def ranges_mm(energies: np.ndarray) -> np.ndarray:
        """Our range labels R (mm, what a plan's ``range_mm`` names) of Generic-machine proton
        energies: the label table of the machine's depth doses (``proton_idd.json``), linear
        between its energies."""
        from evaluator.dose.engines.torch_pb.proton_physics import proton_range_labels

        energy, label = proton_range_labels()
        e = np.asarray(energies, dtype=np.float64)
        return np.asarray(np.interp(e, energy, label), dtype=np.float64).reshape(np.shape(e))

    def spots(
        self, planning_ct: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> list[dict[str, np.ndarray]]:
        """Per beam: BEV ray positions (mm at the isocentre) and beamlet energies (MeV)."""
        if self.remote:
            beams = remote.call("spots", {"ct": planning_ct, "labels": labels}, plan, spacing)
            return [{"pos_bev": np.asarray(b["pos_bev"]).reshape(-1, 3),
                     "energy": np.asarray(b["energy"])} for b in beams]
        return self._steered(self.steering(planning_ct, spacing, plan, labels))
