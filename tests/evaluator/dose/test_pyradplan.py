"""Reference engine (pyRadPlan): runs only where the optional extra is installed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from evaluator.dose.engines import DoseComputationError
from evaluator.dose.engines.torch_pb import SpotList, TorchPencilBeamEngine
from evaluator.dose.gamma import GammaSettings, gamma_pass_rate
from evaluator.dose.plan import Plan

from .conftest import SPACING, make_plan, phantom

pytest.importorskip("pyRadPlan")
from evaluator.dose.engines.pyradplan import PyRadPlanEngine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_plans() -> dict[str, Plan]:
    hu, labels = phantom()
    ref = PyRadPlanEngine()
    plans = {}
    for modality in ("photon", "proton"):
        plan = make_plan(modality)
        plan.weights["pyradplan"] = ref.optimize(hu, SPACING, plan, labels)
        plans[modality] = plan
    return plans


@pytest.mark.parametrize("modality", ["photon", "proton"])
def test_reference_dose_and_agreement(reference_plans: dict[str, Plan], modality: str) -> None:
    hu, labels = phantom()
    plan = reference_plans[modality]
    ref = PyRadPlanEngine()
    d_ref = ref.compute(hu, SPACING, plan, labels)
    assert d_ref[labels == 2].mean() == pytest.approx(2.0, rel=0.02)
    # our physics on exactly the reference beamlets and weights
    spots, weights, offset = [], [], 0
    for beam in ref.spots(hu, SPACING, plan, labels):
        n = len(beam["energy"])
        ranges = ref.ranges_mm(beam["energy"]) if modality == "proton" else np.full(n, np.nan)
        spots.append(SpotList(beam["pos_bev"][:, 0], beam["pos_bev"][:, 2], ranges))
        weights.append(plan.weights["pyradplan"][offset: offset + n])
        offset += n
    ours = TorchPencilBeamEngine().compute_spots(hu, SPACING, plan, labels, spots, weights)
    # photons: the machine's kernel model; protons: depth dose and spot size fitted to the
    # Generic machine; both on the plan's dose grid like pyRadPlan
    assert ours[labels == 2].mean() == pytest.approx(d_ref[labels == 2].mean(), rel=0.01)
    rate = gamma_pass_rate(d_ref, ours, SPACING[::-1], GammaSettings(2, 2, 10, 10))
    print(modality, "gamma 2%/2mm ours vs pyRadPlan", rate)
    assert rate >= 0.99


def test_stale_weights_are_reported() -> None:
    hu, labels = phantom()
    plan = make_plan("photon")
    plan.weights["pyradplan"] = [1.0]
    with pytest.raises(DoseComputationError, match="re-optimise"):
        PyRadPlanEngine().compute(hu, SPACING, plan, labels)


def test_plan_steered_by_pyradplan_is_recomputed_by_torch_pb() -> None:
    """A plan made by pyRadPlan lists its beamlets; torch_pb recomputes exactly that plan
    (same weights) and agrees with pyRadPlan, on the CT and on a perturbed sCT."""
    hu, labels = phantom()
    ref = PyRadPlanEngine()
    plan = ref.plan_with_beamlets(hu, SPACING, make_plan("proton"), labels)
    assert plan.beamlets is not None and plan.beamlet_source is not None
    assert plan.beamlet_source.startswith("pyradplan")
    assert plan.weights["torch_pb"] == plan.weights["pyradplan"]
    assert sum(len(b["u_mm"]) for b in plan.beamlets) == len(plan.weights["torch_pb"])
    sct = np.where(hu > -500, hu * 1.03 + 15, hu).astype(np.float32)
    ours = TorchPencilBeamEngine()
    for image in (hu, sct):
        d_ref = ref.compute(image, SPACING, plan, labels, planning_ct_hu=hu)
        d_our = ours.compute(image, SPACING, plan, labels, planning_ct_hu=hu)
        assert gamma_pass_rate(d_ref, d_our, SPACING[::-1], GammaSettings(2, 2, 10, 10)) >= 0.99
    # beamlets pyRadPlan would not steer cannot be recomputed by it: a clear error
    moved = [dict(b) for b in plan.beamlets]
    moved[0] = {**moved[0], "u_mm": [u + plan.bixel_width_mm for u in moved[0]["u_mm"]]}
    edited = dataclasses.replace(plan, beamlets=moved)
    with pytest.raises(DoseComputationError, match="not the ones pyRadPlan steers"):
        ref.compute(hu, SPACING, edited, labels)


@pytest.mark.parametrize("modality", ["photon", "proton"])
def test_own_steering_matches_pyradplan(modality: str) -> None:
    """torch_pb steers like matRad/pyRadPlan: the same photon rays; proton rays and layers
    nearly the same (our layers sit on a 3 mm range lattice, the machine's on its energies)."""
    hu, labels = phantom()
    plan = make_plan(modality)
    b = plan.bixel_width_mm
    ours = TorchPencilBeamEngine().beamlets(hu, SPACING, plan, labels)
    theirs = PyRadPlanEngine().spots(hu, SPACING, plan, labels)
    for mine, ref in zip(ours, theirs, strict=True):
        cells = {(round(u / b), round(v / b))
                 for u, v in zip(mine["u_mm"], mine["v_mm"], strict=True)}
        ref_cells = {(round(p[0] / b), round(p[2] / b)) for p in ref["pos_bev"]}
        if modality == "photon":
            assert cells == ref_cells
        else:
            assert len(cells & ref_cells) >= 0.95 * len(ref_cells)
            assert len(mine["u_mm"]) == pytest.approx(len(ref["energy"]), rel=0.1)
