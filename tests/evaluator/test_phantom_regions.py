"""Every region and both tasks of the phantom generator: anatomy within plausible bounds,
TotalSegmentator-labelled segmentations, CBCT artefacts and field of view, layouts that vary
per seed, per-region plans, the CLI in the SynthRAD2025 layout and the importer reading it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluator.dose.phantom_plans import make_phantom_plans, make_phantom_structures
from evaluator.io import read_volume
from evaluator.phantom_contrast import CBCT_OUTSIDE_HU
from evaluator.phantom_regions import REGIONS, TS
from evaluator.phantoms import case_id, make_case

NEW = ["head_neck", "thorax", "abdomen"]


def _hu(case: dict, name: str) -> float:
    return float(np.median(case["ct"][case["segmentation"] == TS[name]]))


@pytest.mark.parametrize("anatomy", list(REGIONS))
def test_every_listed_structure_is_drawn_and_nothing_else(anatomy: str) -> None:
    case = make_case(anatomy, "small", np.random.default_rng(1))
    present = set(np.unique(case["segmentation"])) - {0}
    assert present == {TS[n] for n in REGIONS[anatomy].structures}
    assert not (case["segmentation"][case["mask"] == 0]).any()
    assert case["ct"].shape == REGIONS[anatomy].shapes["small"]


def test_anatomy_has_plausible_values() -> None:
    hn = make_case("head_neck", "small", np.random.default_rng(2))
    th = make_case("thorax", "small", np.random.default_rng(2))
    ab = make_case("abdomen", "small", np.random.default_rng(2))
    assert _hu(hn, "trachea") < -500 and _hu(th, "trachea") < -500  # airway: air
    assert _hu(hn, "skull") > 400 and _hu(hn, "vertebrae_C4") > 300
    assert 0 < _hu(hn, "brain") < 80 and 0 < _hu(hn, "thyroid_gland") < 150
    for lobe in ("lung_upper_lobe_left", "lung_lower_lobe_right", "lung_middle_lobe_right"):
        assert -900 < _hu(th, lobe) < -650
    assert 0 < _hu(th, "heart") < 80 and _hu(th, "rib_left_5") > 300
    assert _hu(th, "sternum") > 300 and _hu(th, "vertebrae_T6") > 300
    assert 30 < _hu(ab, "liver") < 90 and 0 < _hu(ab, "kidney_left") < 80
    assert _hu(ab, "vertebrae_L2") > 300
    # Left is +x (LPS): the liver and right kidney on the patient's right, the spleen left.
    x = np.arange(ab["ct"].shape[2])
    centre_x = {n: x[np.nonzero(ab["segmentation"] == TS[n])[2]].mean() for n in
                ("liver", "kidney_right", "kidney_left", "spleen")}
    mid = ab["ct"].shape[2] / 2
    assert centre_x["liver"] < mid and centre_x["kidney_right"] < mid
    assert centre_x["kidney_left"] > mid and centre_x["spleen"] > mid
    # The spinal cord lies inside the canal, behind the vertebral bodies (+y posterior).
    for case, vertebra in ((th, "vertebrae_T6"), (ab, "vertebrae_L2"), (hn, "vertebrae_C4")):
        y = np.nonzero(case["segmentation"] == TS["spinal_cord"])[1].mean()
        body_y = np.nonzero(case["segmentation"] == TS[vertebra])[1]
        assert body_y.min() < y <= body_y.max()
    # Plausible size: a thorax about 25-45 cm wide.
    width_mm = th["mask"].any(axis=(0, 1)).sum() * th["spacing"][0]
    assert 250 < width_mm < 450


@pytest.mark.parametrize("anatomy", [*NEW, "brain"])
def test_cbct_has_artefacts_within_its_field_of_view(anatomy: str) -> None:
    mri = make_case(anatomy, "small", np.random.default_rng(4), task="mri")
    cbct = make_case(anatomy, "small", np.random.default_rng(4), task="cbct")
    assert np.array_equal(mri["ct"], cbct["ct"])  # both tasks of a seed share the CT
    fov = cbct["fov"].astype(bool)
    assert 0.2 < fov.mean() < 0.95 and not fov.all(axis=0).all()
    assert (cbct["cbct"][~fov] == CBCT_OUTSIDE_HU).all()
    assert not (cbct["mask"].astype(bool) & ~fov).any()  # the mask says where the FOV is
    assert cbct["mask"].sum() < mri["mask"].sum()
    inside = fov & cbct["mask"].astype(bool)
    diff = cbct["cbct"][inside].astype(float) - cbct["ct"][inside]
    assert 15 < np.std(diff) < 250  # noise, streaks, cupping: not the CT
    assert abs(np.median(diff)) < 200  # but HU-like


def test_cbct_cupping_streaks_and_offsets_on_a_water_cylinder() -> None:
    """On a uniform water cylinder with a bone rod the CBCT is darker in the centre than at
    the edge (cupping), has streaks beside the bone, and is HU-like but offset from the CT."""
    from scipy import ndimage

    from evaluator.phantom_contrast import cbct_from_ct

    shape, spacing = (8, 96, 96), (4.0, 2.0, 2.0)
    _, y, x = np.ogrid[:8, :96, :96]
    r = np.hypot(y - 47.5, x - 47.5)
    body = np.broadcast_to(r < 40, shape).copy()
    ct = np.where(body, 0, -1000).astype(np.int16)
    ct[:, 44:52, 20:28] = 1200  # a bone rod off-centre
    offsets = []
    for seed in range(3):
        cbct, fov = cbct_from_ct(ct, body, spacing, np.random.default_rng(seed))
        d = cbct.astype(float) - ct
        water = body & (ct == 0)
        core = water & np.broadcast_to(r < 8, shape)
        rim = water & np.broadcast_to((r > 30) & (r < 35), shape)
        assert np.median(d[core]) < np.median(d[rim]) - 40, seed  # cupping
        offsets.append(np.median(d[rim]))
        # streaks: the same case without the rod differs, far from the rod, only by lines
        # radiating from it (the rod's own blur reaches a few voxels)
        plain, _ = cbct_from_ct(np.where(body, 0, -1000).astype(np.int16), body, spacing,
                                np.random.default_rng(seed))
        far = water & ~np.broadcast_to(ndimage.binary_dilation(ct[0] > 0, iterations=6), shape)
        streaks = np.abs(cbct.astype(float) - plain)[far & fov.astype(bool)]
        assert streaks.max() > 20 and 0.01 < (streaks > 8).mean() < 0.4, seed
        # the field of view: a cylinder, cut short in z
        assert fov[1:-1, 47, 47].all() and not fov[:, 0, 0].any()
        assert not fov[0].any() and not fov[-1].any()
    assert np.ptp(offsets) > 5  # the HU offset is drawn per case


@pytest.mark.parametrize("anatomy", NEW)
def test_varied_layouts_keep_targets_and_organs_in_the_anatomy(anatomy: str) -> None:
    centres = []
    for seed in range(5):
        case = make_case(anatomy, "small", np.random.default_rng(seed), vary_layout=True)
        again = make_case(anatomy, "small", np.random.default_rng(seed), vary_layout=True)
        assert np.array_equal(case["ct"], again["ct"]) and case["layout"] == again["layout"]
        structures, names = make_phantom_structures(case["labels"], anatomy, case["layout"])
        for name, value in names.items():
            assert (structures == value).sum() > 0, (seed, name)
        ptv = structures == names["PTV"]
        assert not (ptv & (case["labels"] == 0)).any()
        if anatomy == "thorax":  # a lung tumour: mostly lung around a soft-tissue core
            lung = np.isin(case["segmentation"], [TS[n] for n in TS if n.startswith("lung")])
            assert lung[ptv].mean() > 0.5, seed
            for side in ("lung_l", "lung_r"):  # lung structures: lung voxels only
                assert (case["labels"][structures == names[side]] == 1).all()
        if anatomy == "abdomen":  # organs drawn where the layout puts them
            organ = structures == names["liver"]
            assert (case["segmentation"][organ] == TS["liver"]).mean() > 0.8
        centres.append(np.argwhere(ptv).mean(axis=0) * np.array(case["spacing"][::-1]))
    assert np.ptp(np.array(centres), axis=0).max() > 15  # mm


@pytest.mark.parametrize("anatomy", list(REGIONS))
def test_plans_follow_the_region_table(anatomy: str) -> None:
    spec = REGIONS[anatomy]
    case = make_case(anatomy, "small", np.random.default_rng(0))
    plans = make_phantom_plans(case["labels"], case["spacing"], anatomy, case["layout"])
    structures, _ = make_phantom_structures(case["labels"], anatomy, case["layout"])
    assert plans["photon"].prescription_gy == spec.prescription_gy
    assert [b.gantry_deg for b in plans["photon"].beams] == list(spec.photon_angles)
    assert [b.gantry_deg for b in plans["proton"].beams] == list(spec.proton_angles)
    assert set(plans["photon"].oars) == set(case["layout"].oars)
    plans["photon"].check_structures(structures)


def test_cli_writes_every_region_and_task_in_the_synthrad_layout(tmp_path: Path) -> None:
    from backend.datasets.importers import find_cases
    from backend.models import Modality
    from evaluator.cli import main

    for anatomy in NEW:
        for task in ("mri", "cbct"):
            assert main(["phantom", "--region", anatomy, "--task", task, "--synthrad-layout",
                         "--out", str(tmp_path), "--seed", "5"]) == 0
    task2 = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("Task2/*/*"))
    assert task2 == ["Task2/AB/2ABA001", "Task2/HN/2HNA001", "Task2/TH/2THA001"]
    th = tmp_path / "Task2" / "TH" / "2THA001"
    assert {p.name for p in th.iterdir()} == {"cbct.mha", "ct.mha", "mask.mha", "labels.mha",
                                               "segmentation.mha", "region.json"}
    assert json.loads((th / "region.json").read_text()) == "Thorax"
    assert read_volume(th / "cbct.mha").array.shape == REGIONS["thorax"].shapes["small"]
    # The importer reads the region from the SynthRAD folder name too (no region.json).
    (th / "region.json").unlink()
    found = {c.name: c for c in find_cases(tmp_path)}
    assert len(found) == 6
    assert found["2THA001"].region == "Thorax" and found["2THA001"].modality is Modality.CBCT
    assert found["1HNA001"].region == "Head and Neck" and found["1HNA001"].modality is Modality.MRI
    assert found["2ABA001"].input_image.name == "cbct.mha"
    assert case_id("abdomen", 0, "cbct") == "2ABA001"


def test_cli_refuses_an_unknown_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from evaluator.cli import main

    with pytest.raises(SystemExit):
        main(["phantom", "--region", "knee", "--out", str(tmp_path)])
    assert "invalid choice: 'knee'" in capsys.readouterr().err
