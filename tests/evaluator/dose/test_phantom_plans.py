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
    assert "python3 -m venv .venv-pyradplan" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("anatomy", ["brain", "pelvis"])
def test_varied_layouts_move_the_target_and_organs(anatomy: str) -> None:
    """With vary_layout each seed puts the target (and organs, and beams) elsewhere, within
    the anatomy: the target stays in the body (brain: in brain tissue, not bone), every
    organ keeps voxels, and a seed gives the same case twice."""
    centres, angles = [], []
    for seed in range(8):
        case = make_case(anatomy, "small", np.random.default_rng(seed), vary_layout=True)
        again = make_case(anatomy, "small", np.random.default_rng(seed), vary_layout=True)
        assert case["layout"] == again["layout"]
        assert np.array_equal(case["ct"], again["ct"])
        structures, names = make_phantom_structures(case["labels"], anatomy, case["layout"])
        for name, value in names.items():
            assert (structures == value).sum() > 0, (seed, name)
        ptv = structures == names["PTV"]
        assert not (ptv & (case["labels"] == 0)).any()
        if anatomy == "brain":  # soft tissue, not the skull
            assert (case["labels"][ptv] == 2).mean() > 0.95, seed
        plans = make_phantom_plans(case["labels"], case["spacing"], anatomy, case["layout"])
        for plan in plans.values():
            assert 2 <= len(plan.oars) <= 4
            plan.check_structures(structures)
        centres.append(np.argwhere(ptv).mean(axis=0) * np.array(case["spacing"][::-1]))
        angles.append(plans["proton"].beams[0].gantry_deg)
    spread = np.ptp(np.array(centres), axis=0)  # mm, (z, y, x)
    assert spread.max() > 20, spread
    assert len(set(angles)) == len(angles)


def test_pelvis_organs_in_the_tissue_follow_the_layout() -> None:
    """The bladder's fluid and the rectum's gas are drawn where the organ structures are."""
    from evaluator.phantom_layout import FIXED
    from evaluator.phantoms import FLUID

    for seed in range(3):
        case = make_case("pelvis", "small", np.random.default_rng(seed), vary_layout=True)
        assert case["layout"].oars["bladder"] != FIXED["pelvis"].oars["bladder"]
        structures, names = make_phantom_structures(case["labels"], "pelvis", case["layout"])
        import evaluator.phantoms as ph

        tissue = ph._pelvis(case["ct"].shape, np.random.default_rng(0), case["layout"])
        bladder_fluid = tissue == FLUID
        organ = (structures == names["bladder"]) | (structures == names["PTV"])
        assert (organ[bladder_fluid]).mean() > 0.9


def test_fixed_layout_is_the_default() -> None:
    from evaluator.phantom_layout import fixed_layout

    case = make_case("brain", "small", np.random.default_rng(4))
    assert case["layout"] == fixed_layout("brain")
    a, _ = make_phantom_structures(case["labels"], "brain")
    b, _ = make_phantom_structures(case["labels"], "brain", fixed_layout("brain"))
    assert np.array_equal(a, b)


def test_cli_vary_layout(tmp_path: Path) -> None:
    """`phantom --vary-layout --plans`: two cases of one seed differ in their target."""
    from evaluator.cli import main
    from evaluator.io import read_volume

    out = tmp_path / "cases"
    assert main(["phantom", "--anatomy", "brain", "--cases", "2", "--seed", "11",
                 "--out", str(out), "--vary-layout"]) == 0
    cases = sorted(out.iterdir())
    assert len(cases) == 2
    labels = [read_volume(c / "labels.mha").array for c in cases]
    layouts = [make_case("brain", "small", np.random.default_rng([11, i, 0]),
                         vary_layout=True)["layout"] for i in range(2)]
    assert layouts[0].ptv != layouts[1].ptv
    ptvs = [make_phantom_structures(lab, "brain", lay)[0] == 2
            for lab, lay in zip(labels, layouts, strict=True)]
    assert not np.array_equal(ptvs[0], ptvs[1])
