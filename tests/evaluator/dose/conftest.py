"""Small synthetic dose cases (<= 40^3 voxels at 4 mm) shared by the dose tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from evaluator.dose.engines.torch_pb import TorchPencilBeamEngine
from evaluator.dose.plan import PLAN_FILE, Beam, Plan, save_plan

N = 36
SPACING = (4.0, 4.0, 4.0)


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Water cylinder with a bone ring, PTV sphere and two OARs: (hu, structures)."""
    z, y, x = np.mgrid[:N, :N, :N].astype(np.float32)
    c = (N - 1) / 2
    r2 = (x - c) ** 2 + (y - c) ** 2
    hu = np.full((N, N, N), -1000.0, np.float32)
    body = r2 < (0.42 * N) ** 2
    hu[body] = 20.0
    hu[body & (r2 > (0.35 * N) ** 2)] = 900.0
    labels = np.zeros(hu.shape, np.uint8)
    labels[body] = 1
    labels[((x - c - 8) ** 2 + (y - c) ** 2 + (z - c) ** 2) < 3.0**2] = 3
    labels[((x - c) ** 2 + (y - c + 8) ** 2 + (z - c) ** 2) < 3.0**2] = 4
    labels[((x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2) < 4.5**2] = 2
    return hu, labels


def make_plan(modality: str) -> Plan:
    angles = [0.0, 120.0, 240.0] if modality == "photon" else [90.0, 270.0]
    return Plan(
        modality=modality,  # type: ignore[arg-type]
        prescription_gy=2.0,
        target="PTV",
        structures={"BODY": 1, "PTV": 2, "OAR_A": 3, "OAR_B": 4},
        oars=["OAR_A", "OAR_B"],
        beams=[Beam(a) for a in angles],
        bixel_width_mm=6.0,
        dose_grid_mm=4.0,
        structure_file="structures.mha",
    )


def write_image(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> None:
    img: Any = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="session")
def optimised_plans() -> dict[str, Plan]:
    hu, labels = phantom()
    engine = TorchPencilBeamEngine()
    plans = {}
    for modality in ("photon", "proton"):
        plan = make_plan(modality)
        plan.weights["torch_pb"] = engine.optimize(hu, SPACING, plan, labels, iterations=80)
        plans[modality] = plan
    return plans


@pytest.fixture()
def case_dir(tmp_path: Path, optimised_plans: dict[str, Plan]) -> Path:
    hu, labels = phantom()
    case = tmp_path / "1BA001"
    case.mkdir()
    write_image(case / "ct.mha", hu.astype(np.int16))
    write_image(case / "structures.mha", labels)
    for modality, plan in optimised_plans.items():
        save_plan(plan, case / PLAN_FILE[modality])
    return case
