from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluator.dose.plan import Beam, Plan, PlanError, load_plan, save_plan

from .conftest import make_plan, phantom


def test_roundtrip(tmp_path: Path) -> None:
    plan = make_plan("proton")
    plan.weights["torch_pb"] = [1.0, 2.5]
    plan.isocenter_mm = (1.0, 2.0, 3.0)
    save_plan(plan, tmp_path / "p.json")
    again = load_plan(tmp_path / "p.json")
    assert again == plan
    assert again.beams[0] == Beam(90.0, 0.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": "GTV"}, "target 'GTV'"),
        ({"oars": ["liver"]}, "organ at risk 'liver'"),
        ({"modality": "electron"}, "modality"),
        ({"prescription_gy": -1}, "prescription_gy"),
        ({"beams": []}, "at least one beam"),
        ({"colour": "red"}, "unknown plan field"),
        ({"dose_grid_mm": 0.05}, "dose_grid_mm must be between 0.5 and 10"),
        ({"dose_grid_mm": 0.0}, "dose_grid_mm"),
        ({"bixel_width_mm": 0}, "bixel_width_mm must be > 0"),
    ],
)
def test_validation(tmp_path: Path, change: dict[str, object], message: str) -> None:
    data = make_plan("photon").to_dict()
    data.update(change)
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(PlanError, match=message):
        load_plan(tmp_path / "p.json")


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PlanError, match="not valid JSON"):
        load_plan(tmp_path / "bad.json")
    (tmp_path / "lack.json").write_text(json.dumps({"modality": "photon"}))
    with pytest.raises(PlanError, match="lacks required"):
        load_plan(tmp_path / "lack.json")


def test_missing_structure_in_map() -> None:
    _, labels = phantom()
    plan = make_plan("photon")
    labels = np.where(labels == 3, 1, labels)
    with pytest.raises(PlanError, match=r"'OAR_A' .* is empty"):
        plan.check_structures(labels)


def test_plan_is_validated_on_construction() -> None:
    with pytest.raises(PlanError):
        Plan(modality="photon", prescription_gy=2.0, target="PTV", structures={}, beams=[])


def _beamlets(n_beams: int, proton: bool) -> list[dict[str, list[float]]]:
    beam = {"u_mm": [0.0, 6.0, -6.0], "v_mm": [0.0, 0.0, 12.0]}
    if proton:
        beam["range_mm"] = [80.0, 80.0, 95.5]
        beam["energy_mev"] = [100.0, 100.0, 110.0]
    return [dict(beam) for _ in range(n_beams)]


def test_beamlets_roundtrip(tmp_path: Path) -> None:
    plan = make_plan("proton")
    plan.beamlets = _beamlets(2, proton=True)
    plan.beamlet_source = "test"
    save_plan(plan, tmp_path / "p.json")
    again = load_plan(tmp_path / "p.json")
    assert again == plan and again.beamlets is not None
    assert again.beamlets[1]["range_mm"] == [80.0, 80.0, 95.5]


@pytest.mark.parametrize(
    ("modality", "edit", "message"),
    [
        ("photon", lambda b: b[:1], "lists 1 beam"),
        ("proton", lambda b: [{k: v for k, v in x.items() if k != "range_mm"} for x in b],
         r"missing \['range_mm'\]"),
        ("photon", lambda b: [{**x, "weight": [1.0, 1.0, 1.0]} for x in b],
         r"unknown \['weight'\]"),
        ("photon", lambda b: [{**x, "v_mm": [0.0, 0.0]} for x in b], "same, non-zero length"),
        ("photon", lambda b: [{**x, "u_mm": [0.0, 6.0, -5.0]} for x in b], "bixel lattice"),
        ("photon", lambda b: [{**x, "u_mm": [0.0, 0.0, -6.0], "v_mm": [0.0, 0.0, 12.0]}
                              for x in b], "listed twice"),
        ("photon", lambda b: [{**x, "u_mm": [0.0, float("nan"), -6.0]} for x in b], "finite"),
        ("proton", lambda b: [{**x, "range_mm": [80.0, -1.0, 95.5]} for x in b], "positive"),
    ],
)
def test_beamlet_validation(tmp_path: Path, modality: str, edit: object, message: str) -> None:
    data = make_plan(modality).to_dict()
    n = len(data["beams"])
    data["beamlets"] = edit(_beamlets(n, proton=modality == "proton"))  # type: ignore[operator]
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(PlanError, match=message):
        load_plan(tmp_path / "p.json")
