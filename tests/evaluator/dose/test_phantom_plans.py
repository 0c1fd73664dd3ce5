from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from evaluator.dose.phantom_plans import (
    make_phantom_plans,
    make_phantom_structures,
    write_phantom_plans,
)
from evaluator.dose.plan import load_plan
from evaluator.phantoms import make_case


@pytest.mark.parametrize("anatomy", ["brain", "pelvis"])
def test_structures_and_plans(anatomy: str) -> None:
    case = make_case(anatomy, "small", np.random.default_rng(0))
    structures, names = make_phantom_structures(case["labels"], anatomy)
    assert names["BODY"] == 1 and names["PTV"] == 2
    for name, value in names.items():
        assert (structures == value).sum() > 0, name
    assert not (structures[case["labels"] == 0]).any()  # nothing outside the body
    plans = make_phantom_plans(case["labels"], case["spacing"], anatomy)
    assert set(plans) == {"photon", "proton"}
    for plan in plans.values():
        assert 2 <= len(plan.oars) <= 4
        plan.check_structures(structures)


def test_write_phantom_plans(tmp_path: Path) -> None:
    case = make_case("brain", "small", np.random.default_rng(1))
    labels = case["labels"][::2, ::2, ::2]  # keep the test fast
    spacing = tuple(2 * s for s in case["spacing"])
    ct = case["ct"][::2, ::2, ::2].astype(np.float32)
    written = write_phantom_plans(tmp_path, labels, spacing, "brain", ct_hu=ct)
    assert sorted(p.name for p in written.values()) == ["plan_photon.json", "plan_proton.json"]
    img = sitk.ReadImage(str(tmp_path / "structures.mha"))
    assert img.GetSpacing() == pytest.approx(spacing)
    for path in written.values():
        plan = load_plan(path)
        assert len(plan.weights["torch_pb"]) > 0


@pytest.mark.slow
def test_phantom_dataset_with_plans_end_to_end(tmp_path: Path) -> None:
    from evaluator.dose import dose_metrics_for_case
    from evaluator.phantoms import generate_dataset

    (case,) = generate_dataset(tmp_path, "pelvis", 1, seed=3, plans=True)
    assert (case / "plan_photon.json").is_file() and (case / "structures.mha").is_file()
    metrics = dose_metrics_for_case(case, case / "ct.mha")
    assert metrics["gamma_photon"] == 100.0 and metrics["mae_target_proton"] == 0.0


def test_planner_is_validated(tmp_path: Path) -> None:
    case = make_case("brain", "small", np.random.default_rng(0))
    with pytest.raises(ValueError, match="planner must be one of"):
        write_phantom_plans(tmp_path, case["labels"], case["spacing"], "brain",
                            ct_hu=case["ct"], planner="matlab")
    with pytest.raises(ValueError, match="needs the CT"):
        write_phantom_plans(tmp_path, case["labels"], case["spacing"], "brain",
                            planner="pyradplan")


def test_cli_planner_pyradplan_without_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the optional extra (as in CI), --planner pyradplan is a clear input error and
    writes nothing."""
    from evaluator.cli import main
    from evaluator.dose.engines import pyradplan

    monkeypatch.setattr(pyradplan, "available", lambda: False)
    out = tmp_path / "cases"
    code = main(["phantom", "--anatomy", "brain", "--out", str(out), "--plans",
                 "--planner", "pyradplan"])
    assert code == 2
    assert "pip install 'syntharena[dose]'" in capsys.readouterr().err
    assert not out.exists()
