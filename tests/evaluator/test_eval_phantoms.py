from __future__ import annotations

import json

import numpy as np
import pytest

from evaluator.io import read_volume
from evaluator.phantoms import (
    CORTICAL,
    FAT,
    SHAPES,
    SOFT,
    generate_dataset,
    make_case,
)


def test_layout_geometry_and_region(phantom_dir):
    cases = sorted(p.name for p in phantom_dir.iterdir())
    assert cases == ["1BA001", "1BA002", "1PA001"]
    for case in cases:
        vols = {n: read_volume(phantom_dir / case / f"{n}.mha")
                for n in ("mr", "ct", "mask", "labels")}
        shape = SHAPES[("brain" if case[1] == "B" else "pelvis", "small")]
        for v in vols.values():
            assert v.array.shape == shape
            assert v.spacing == vols["ct"].spacing and v.origin == vols["ct"].origin
        assert vols["ct"].array.dtype == np.int16
        assert set(np.unique(vols["labels"].array)) <= {0, 1, 2, 3}
        assert np.all(vols["labels"].array[vols["mask"].array == 0] == 0)
        region = json.loads((phantom_dir / case / "region.json").read_text())
        assert region == ("Brain" if case[1] == "B" else "Pelvis")


def test_deterministic_for_a_seed(tmp_path):
    a = generate_dataset(tmp_path / "a", "pelvis", 1, seed=7)[0]
    b = generate_dataset(tmp_path / "b", "pelvis", 1, seed=7)[0]
    c = generate_dataset(tmp_path / "c", "pelvis", 1, seed=8)[0]
    for name in ("mr.mha", "ct.mha", "mask.mha", "labels.mha"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert not np.array_equal(read_volume(a / "ct.mha").array, read_volume(c / "ct.mha").array)


@pytest.mark.parametrize("anatomy", ["brain", "pelvis"])
def test_tissue_values(anatomy, monkeypatch):
    import evaluator.phantoms as ph

    captured = {}
    original = ph._brain if anatomy == "brain" else ph._pelvis

    def spy(shape, rng, *layout):
        captured["t"] = original(shape, rng, *layout)
        return captured["t"]

    monkeypatch.setattr(ph, "_brain" if anatomy == "brain" else "_pelvis", spy)
    case = make_case(anatomy, "small", np.random.default_rng(0))
    t, ct, mr = captured["t"], case["ct"].astype(float), case["mr"]
    outside = case["mask"] == 0
    assert abs(np.median(ct[outside]) + 1000) < 30
    assert np.median(ct[t == SOFT]) == pytest.approx(40, abs=25)
    assert np.median(ct[t == FAT]) == pytest.approx(-100, abs=60)
    assert np.median(ct[t == CORTICAL]) > 500
    # MR: air and cortical bone dark, soft tissue and fat bright; bias field varies
    assert np.median(mr[outside]) < 0.3 * np.median(mr[t == SOFT])
    assert np.median(mr[t == CORTICAL]) < 0.6 * np.median(mr[t == SOFT])
    assert np.median(mr[t == FAT]) > np.median(mr[t == SOFT])
    assert (mr >= 0).all()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="anatomy"):
        generate_dataset(tmp_path, "knee", 1, 0)
    with pytest.raises(ValueError, match="size"):
        generate_dataset(tmp_path, "brain", 1, 0, size="huge")
    with pytest.raises(ValueError, match="at least 1"):
        generate_dataset(tmp_path, "brain", 0, 0)
