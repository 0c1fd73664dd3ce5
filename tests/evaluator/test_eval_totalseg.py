"""The TotalSegmentator segmenter through its real loading and inference path (nnU-Net v2's
predictor on a tiny model the tests make: tests/helpers/totalseg_model.py), the weights
setting, the cached ground truth, and geometry failures that keep the other metrics."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluator.io import Volume, read_volume, write_volume
from evaluator.scoring import score_case
from evaluator.segmentation import SegmenterUnavailableError, TotalSegmentatorSegmenter
from evaluator.segmentation.totalseg import DATASET, MODEL, model_dir, weights_problem
from tests.helpers.totalseg_model import make_totalseg_weights

FAVOURED = (5, 51, 79)  # liver, heart, spinal cord: all on the thorax/abdomen list


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_totalseg_weights(tmp_path_factory.mktemp("ts"), favoured=FAVOURED)


@pytest.fixture(scope="module")
def heart_everywhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_totalseg_weights(tmp_path_factory.mktemp("ts-const"), constant=51)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: nothing may try to download weights."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def body(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    r2 = sum(((g - ci) / (n / 2.4)) ** 2 for g, ci, n in zip((z, y, x), c, shape, strict=True))
    hu = np.where(r2 < 1, 40.0, -1000.0)
    hu[r2 < 0.2] = 700.0
    return (hu + rng.normal(0, 30, shape)).astype(np.float32)


def test_weights_setting_and_clear_errors(tmp_path: Path, weights: Path) -> None:
    with pytest.raises(SegmenterUnavailableError, match="SYNTHARENA_TOTALSEG_WEIGHTS_DIR"):
        model_dir(None)
    problem = weights_problem(tmp_path)
    assert problem is not None and "checkpoint_final.pth" in problem and "README" in problem
    folder = weights / "nnunet" / "results" / DATASET / MODEL
    assert model_dir(weights) == folder  # a TotalSegmentator home
    assert model_dir(weights / "nnunet" / "results") == folder  # an nnU-Net results folder
    assert weights_problem(weights) is None


def test_real_inference_path(weights: Path, no_network: None) -> None:
    ct = Volume(body((20, 30, 28)), spacing=(1.5, 1.2, 2.5), origin=(3.0, -4.0, 5.0),
                direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    segmenter = TotalSegmentatorSegmenter(weights)
    labels = segmenter.segment(ct)
    assert labels.shape == ct.array.shape and labels.dtype == np.uint8
    found = set(np.unique(labels).tolist())
    # The network may only answer favoured labels; 0 appears on the border, where the
    # pinned resampling (zoom, constant mode) falls just outside the grid.
    assert found - {0} and found <= {0, *FAVOURED}
    np.testing.assert_array_equal(segmenter.segment(ct), labels)  # deterministic


def test_constant_model_on_a_3mm_grid(heart_everywhere: Path) -> None:
    # At 3 mm nothing is resampled: every voxel is the network's answer.
    ct = Volume(body((9, 12, 11)), spacing=(3.0, 3.0, 3.0))
    labels = TotalSegmentatorSegmenter(heart_everywhere).segment(ct)
    assert (labels == 51).all()


def write_case(folder: Path, ct: np.ndarray, sct: np.ndarray, spacing: tuple[float, ...]
               ) -> tuple[Path, Path, Path]:
    mask = (ct > -500).astype(np.uint8)
    kw: dict[str, Any] = {"spacing": spacing, "origin": (1.0, 2.0, 3.0)}
    return (write_volume(folder / "ct.mha", ct, **kw), write_volume(folder / "sct.mha", sct, **kw),
            write_volume(folder / "mask.mha", mask, **kw))


def test_ground_truth_computed_once_and_cached(tmp_path: Path, weights: Path,
                                               no_network: None) -> None:
    ct = body((20, 26, 24))
    ct_path, sct_path, mask_path = write_case(tmp_path, ct, ct.copy(), (1.5, 1.2, 2.0))
    cache = tmp_path / "cache"
    same = score_case(ct_path, sct_path, mask_path, "synthrad2025", region="Abdomen",
                      weights_dir=weights, cache_dir=cache)
    [cached] = list(cache.iterdir())
    assert set(np.unique(read_volume(cached).array)) & set(FAVOURED)
    # sCT = CT: the sCT's segmentation is the ground truth's.
    assert (same["dice"], same["hd95"]) == (1.0, 0.0) and same["mae"] == 0.0
    stamp = cached.stat().st_mtime_ns
    noisy = ct + np.random.default_rng(5).normal(0, 400, ct.shape).astype(np.float32)
    write_volume(sct_path, noisy, spacing=(1.5, 1.2, 2.0), origin=(1.0, 2.0, 3.0))
    other = score_case(ct_path, sct_path, mask_path, "synthrad2025", region="Abdomen",
                       weights_dir=weights, cache_dir=cache)
    assert list(cache.iterdir()) == [cached] and cached.stat().st_mtime_ns == stamp
    assert 0.0 < other["dice"] < 1.0 and other["hd95"] > 0.0


def test_dataset_segmentation_is_the_ground_truth(tmp_path: Path, heart_everywhere: Path
                                                  ) -> None:
    ct = body((8, 10, 12))
    ct_path, sct_path, mask_path = write_case(tmp_path, ct, ct, (3.0, 3.0, 3.0))
    gt = np.zeros(ct.shape, np.uint8)
    gt[2:5, 3:7, 4:9] = 51  # heart: 60 voxels; the model says heart on all 960
    gt[6, 1:3, 1:3] = 17  # thyroid: not on the thorax list
    labels = write_volume(tmp_path / "segmentation.mha", gt, spacing=(3.0, 3.0, 3.0))
    out = score_case(ct_path, sct_path, mask_path, "synthrad2025", labels_path=labels,
                     region="Thorax", weights_dir=heart_everywhere)
    assert out["dice"] == float(np.float32(2 * 60 / (60 + 960)))
    assert out["hd95"] > 0.0 and "geometry_error" not in out


def test_a_failing_segmentation_keeps_the_image_metrics(tmp_path: Path, weights: Path) -> None:
    ct = body((10, 12, 14))
    sct = ct + 25.0
    paths = write_case(tmp_path, ct, sct, (2.0, 2.0, 2.0))
    image_only = score_case(*paths, "synthrad2025", geometry=False)
    assert set(image_only) == {"mae", "psnr", "ms_ssim"}

    no_weights = score_case(*paths, "synthrad2025", region="Thorax")
    assert "SYNTHARENA_TOTALSEG_WEIGHTS_DIR" in no_weights.pop("geometry_error")
    assert no_weights == image_only

    unknown_region = score_case(*paths, "synthrad2025", region="Brain", weights_dir=weights)
    assert "region 'Brain'" in unknown_region.pop("geometry_error")
    assert unknown_region == image_only

    # A real fault: a truncated checkpoint that nnU-Net cannot load.
    broken = make_totalseg_weights(tmp_path / "broken")
    checkpoint = model_dir(broken) / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    failed = score_case(*paths, "synthrad2025", region="Thorax", weights_dir=broken)
    assert failed.pop("geometry_error").startswith("Geometry metrics (totalsegmentator) not")
    assert failed == image_only


def test_phantom_profile_names_its_segmenter(tmp_path: Path) -> None:
    ct = body((10, 12, 14))
    paths = write_case(tmp_path, ct, ct + 10.0, (2.0, 2.0, 2.0))
    labels = np.where(ct > 200, 3, np.where(ct > -400, 2, 1)).astype(np.uint8)
    labels_path = write_volume(tmp_path / "labels.mha", labels, spacing=(2.0, 2.0, 2.0),
                               origin=(1.0, 2.0, 3.0))
    out = score_case(*paths, "synthrad2025-phantom", labels_path=labels_path)
    assert {"dice_hu", "hd95_hu", "dice_hu_bone", "hd95_hu_air"} <= set(out)
    assert "dice" not in out and "hd95" not in out
    assert "dice_hu" not in score_case(*paths, "synthrad2023", labels_path=labels_path)
