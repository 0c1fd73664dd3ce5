from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from evaluator.dose.engines import DoseComputationError, get_engine
from evaluator.dose.engines.hlut import hu_to_density, hu_to_density_torch
from evaluator.dose.engines.torch_pb import (
    PhotonPencilBeam,
    ProtonPencilBeam,
    TorchPencilBeamEngine,
    proton_idd_table,
    steering_target,
    steering_target_t,
)
from evaluator.dose.metrics import mae_target
from evaluator.dose.plan import Plan

from .conftest import SPACING, make_plan, phantom


def test_hlut() -> None:
    hu = np.array([-2000.0, -1000.0, 0.0, 100.0, 350.0, 3000.0, 5000.0])
    expected = [0.001, 0.001, 1.0, 1.095, 1.199, 2.505, 2.505]
    assert hu_to_density(hu) == pytest.approx(expected, rel=1e-5)
    assert hu_to_density_torch(torch.tensor(hu)).numpy() == pytest.approx(expected, rel=1e-5)


def test_bragg_peak_sits_at_the_range() -> None:
    z, idd = proton_idd_table(np.array([80.0, 150.0]))
    for row, r in zip(idd, (80.0, 150.0), strict=True):
        peak = z[np.argmax(row)]
        assert r - 5.0 < peak <= r
        assert row[z > r + 10].max() < 0.01 * row.max()  # no dose beyond the range


@pytest.mark.parametrize("modality", ["photon", "proton"])
def test_optimised_plan_covers_target(optimised_plans: dict[str, Plan], modality: str) -> None:
    hu, labels = phantom()
    plan = optimised_plans[modality]
    dose = TorchPencilBeamEngine().compute(hu, SPACING, plan, labels)
    ptv = labels == 2
    assert dose.shape == hu.shape and np.isfinite(dose).all()
    assert dose[ptv].mean() == pytest.approx(2.0, rel=0.01)
    assert np.percentile(dose[ptv], 5) > 1.7  # reasonably homogeneous
    assert dose[labels == 0].max() == 0.0  # nothing outside the structures
    assert dose[labels == 3].mean() < dose[ptv].mean()


def test_proton_dose_is_more_sensitive_to_hu_errors(optimised_plans: dict[str, Plan]) -> None:
    hu, labels = phantom()
    sct = np.where(hu > -500, hu + 60.0, hu)
    engine = TorchPencilBeamEngine()
    mae = {}
    for modality, plan in optimised_plans.items():
        d_ct = engine.compute(hu, SPACING, plan, labels)
        d_sct = engine.compute(sct, SPACING, plan, labels, planning_ct_hu=hu)
        mae[modality] = mae_target(d_ct, d_sct, 2.0)
        assert mae[modality] > 0
    assert mae["proton"] > mae["photon"]


def test_missing_or_stale_weights() -> None:
    hu, labels = phantom()
    plan = make_plan("photon")
    with pytest.raises(DoseComputationError, match="no 'torch_pb' weights"):
        TorchPencilBeamEngine().compute(hu, SPACING, plan, labels)
    plan.weights["torch_pb"] = [1.0, 2.0]
    with pytest.raises(DoseComputationError, match="re-optimise"):
        TorchPencilBeamEngine().compute(hu, SPACING, plan, labels)
    with pytest.raises(DoseComputationError, match="unknown dose engine"):
        get_engine("monte-carlo")


def test_engine_hands_each_modality_to_its_model() -> None:
    engine = TorchPencilBeamEngine()
    assert isinstance(engine.model(make_plan("photon")), PhotonPencilBeam)
    assert isinstance(engine.model(make_plan("proton")), ProtonPencilBeam)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(optimised_plans: dict[str, Plan]) -> None:
    hu, labels = phantom()
    for plan in optimised_plans.values():
        cpu = TorchPencilBeamEngine("cpu").compute(hu, SPACING, plan, labels)
        gpu = TorchPencilBeamEngine("cuda").compute(hu, SPACING, plan, labels)
        assert np.abs(cpu - gpu).max() < 1e-3 * cpu.max()


@pytest.mark.parametrize("modality", ["photon", "proton"])
def test_listed_beamlets_recompute_the_same_plan(
    optimised_plans: dict[str, Plan], modality: str
) -> None:
    """A plan that lists its beamlets (in any order, each with its weight) gives the same
    dose as the engine's own steering with the same weights."""
    hu, labels = phantom()
    engine = TorchPencilBeamEngine()
    plan = optimised_plans[modality]
    own = engine.compute(hu, SPACING, plan, labels)
    listed = engine.beamlets(hu, SPACING, plan, labels)
    weights = np.asarray(plan.weights["torch_pb"])
    assert sum(len(b["u_mm"]) for b in listed) == len(weights)
    # shuffle the beamlets within each beam: the weights must follow them
    rng = np.random.default_rng(3)
    shuffled, shuffled_w, offset = [], [], 0
    for beam in listed:
        n = len(beam["u_mm"])
        order = rng.permutation(n)
        shuffled.append({k: [v[i] for i in order] for k, v in beam.items()})
        shuffled_w.extend(weights[offset + order].tolist())
        offset += n
    frozen = dataclasses.replace(plan, beamlets=shuffled, weights={"torch_pb": shuffled_w})
    dose = engine.compute(hu * 1.02, SPACING, frozen, labels, planning_ct_hu=hu)
    reference = engine.compute(hu * 1.02, SPACING, plan, labels, planning_ct_hu=hu)
    assert np.abs(dose - reference).max() < 1e-4 * reference.max()
    assert np.abs(engine.compute(hu, SPACING, frozen, labels) - own).max() < 1e-4 * own.max()
    # a wrong weight count names the listed beamlets
    bad = dataclasses.replace(frozen, weights={"torch_pb": shuffled_w[:-1]})
    with pytest.raises(DoseComputationError, match="listed beamlets"):
        engine.compute(hu, SPACING, bad, labels)


def test_optimise_listed_beamlets(optimised_plans: dict[str, Plan]) -> None:
    """Optimising a plan whose beamlets are listed (shuffled) gives one weight per listed
    beamlet and the same plan as optimising the engine's own layout."""
    hu, labels = phantom()
    engine = TorchPencilBeamEngine()
    plan = dataclasses.replace(optimised_plans["proton"], weights={})
    listed = engine.beamlets(hu, SPACING, plan, labels)
    rng = np.random.default_rng(5)
    shuffled = []
    for beam in listed:
        order = rng.permutation(len(beam["u_mm"]))
        shuffled.append({k: [v[i] for i in order] for k, v in beam.items()})
    frozen = dataclasses.replace(plan, beamlets=shuffled, weights={})
    w = engine.optimize(hu, SPACING, frozen, labels, iterations=60)
    assert len(w) == sum(len(b["u_mm"]) for b in shuffled)
    frozen.weights["torch_pb"] = w
    plan.weights["torch_pb"] = engine.optimize(hu, SPACING, plan, labels, iterations=60)
    a = engine.compute(hu, SPACING, frozen, labels)
    b = engine.compute(hu, SPACING, plan, labels)
    assert a[labels == 2].mean() == pytest.approx(2.0, rel=0.01)
    # 60 L-BFGS-B iterations stop short of the optimum, and where they stop depends on the
    # weights' order (its breakpoints are searched in index order): the same plan up to
    # ~1 % of Rx per voxel (2 % at the worst voxel with the machine's sharp Bragg peaks)
    assert np.abs(a - b)[labels == 2].mean() < 0.005 * 2.0
    assert np.abs(a - b).max() < 0.02 * 2.0


def test_steering_target_is_dilated_like_matrad() -> None:
    """The target is dilated by ceil(max(voxel, bixel) / voxel) voxels per axis (a box)."""
    target = np.zeros((20, 20, 20), dtype=bool)
    target[10, 10, 10] = True
    out = steering_target(target, (4.0, 2.0, 6.0), bixel_mm=5.0)  # x, y, z spacing
    z, y, x = np.nonzero(out)
    assert (x.min(), x.max()) == (8, 12)  # ceil(5 / 4) = 2 voxels
    assert (y.min(), y.max()) == (7, 13)  # ceil(5 / 2) = 3
    assert (z.min(), z.max()) == (9, 11)  # max(6, 5) / 6 = 1
    assert out.sum() == 5 * 7 * 3  # a full box


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_steering_target_on_a_device_equals_scipys(device: str) -> None:
    """The pooling version (used on GPUs) dilates exactly like the scipy filter, edges too."""
    rng = np.random.default_rng(7)
    target = rng.uniform(size=(17, 23, 19)) > 0.97
    target[0, 5, 5] = target[16, 22, 18] = True
    for spacing in [(4.0, 2.0, 6.0), (1.0, 1.0, 2.5)]:
        expected = steering_target(target, spacing, bixel_mm=5.0)
        got = steering_target_t(torch.as_tensor(target, device=device), spacing, 5.0) > 0.5
        assert np.array_equal(got.cpu().numpy(), expected)
