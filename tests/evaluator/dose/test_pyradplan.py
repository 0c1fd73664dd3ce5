"""Reference engine (pyRadPlan): runs only where the optional extra is installed."""

from __future__ import annotations

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
