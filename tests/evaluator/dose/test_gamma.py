from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from evaluator.cli import main
from evaluator.dose.gamma import GammaSettings, gamma_index, gamma_pass_rate

from .conftest import write_image

pymedphys = pytest.importorskip("pymedphys")


def dose_pair(shape: tuple[int, ...] = (24, 28, 26), seed: int = 0) -> tuple[np.ndarray, ...]:
    """A smooth 'plan-like' dose and a shifted, scaled, noisy copy."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grids)
    ref = 2.0 / (1 + np.exp((np.sqrt(r2) - 0.5) / 0.08)) + 0.3 * np.exp(-r2)
    ev = ndimage.shift(ref, [0.9, -0.7, 0.6][: len(shape)], order=1, mode="nearest") * 1.03
    ev += rng.normal(0, 0.03, shape)
    return ref, ev


def pymedphys_rate(ref: np.ndarray, ev: np.ndarray, spacing: tuple[float, ...],
                   s: GammaSettings) -> float:
    axes = tuple(np.arange(n) * sp for n, sp in zip(ref.shape, spacing, strict=True))
    g = pymedphys.gamma(axes, ref, axes, ev, s.dose_pct, s.dta_mm,
                        lower_percent_dose_cutoff=s.cutoff_pct,
                        interp_fraction=s.interp_fraction, local_gamma=s.local)
    valid = ~np.isnan(g)
    return float((g[valid] <= 1).mean())


@pytest.mark.parametrize(
    ("settings", "spacing"),
    [
        (GammaSettings(2, 2, 10, 10), (3.0, 3.0, 3.0)),
        (GammaSettings(3, 3, 10, 10), (2.0, 2.5, 3.0)),
        (GammaSettings(2, 2, 2, 1), (3.0, 3.0, 3.0)),
        (GammaSettings(2, 2, 20, 5, local=True), (3.0, 3.0, 3.0)),
        (GammaSettings(1, 1, 10, 3), (2.0, 2.0, 2.0)),
    ],
)
def test_pass_rate_matches_pymedphys(settings: GammaSettings, spacing: tuple[float, ...]) -> None:
    ref, ev = dose_pair()
    ours = gamma_pass_rate(ref, ev, spacing, settings)
    theirs = pymedphys_rate(ref, ev, spacing, settings)
    assert abs(ours - theirs) <= 0.001, (ours, theirs)
    assert 0.0 < ours < 1.0


def test_gamma_values_match_pymedphys() -> None:
    ref, ev = dose_pair((20, 22, 18), seed=1)
    spacing = (2.5, 2.5, 2.5)
    s = GammaSettings(2, 2, 10, 5)
    axes = tuple(np.arange(n) * sp for n, sp in zip(ref.shape, spacing, strict=True))
    theirs = pymedphys.gamma(axes, ref, axes, ev, 2, 2, lower_percent_dose_cutoff=10,
                             interp_fraction=5, max_gamma=2.0)
    ours = gamma_index(ref, ev, spacing, s, max_gamma=2.0)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.nanmax(np.abs(ours - theirs)) < 1e-6


def test_2d_matches_pymedphys() -> None:
    ref, ev = dose_pair((40, 36))
    s = GammaSettings(2, 2, 10, 10)
    assert abs(gamma_pass_rate(ref, ev, (2.0, 2.0), s)
               - pymedphys_rate(ref, ev, (2.0, 2.0), s)) <= 0.001


def test_voxel_search_without_refinement_matches_brute_force() -> None:
    ref, ev = dose_pair((16, 16, 16))
    spacing = (2.0, 2.0, 2.0)
    s = GammaSettings(3, 4, 5, 0)
    ours = gamma_index(ref, ev, spacing, s, max_gamma=1.5)
    # brute force over voxel offsets within the search radius
    norm, expected = ref.max(), np.full(ref.shape, np.nan)
    pad = 3
    padded = np.pad(ev, pad, constant_values=np.inf)
    for idx in np.argwhere(ref >= 0.05 * norm):
        best = np.inf
        for off in np.ndindex(7, 7, 7):
            o = np.array(off) - pad
            dist = float(np.linalg.norm(o * 2.0))
            if dist > 6.0 + 1e-9:
                continue
            diff = padded[tuple(idx + o + pad)] - ref[tuple(idx)]
            best = min(best, math.sqrt((diff / (0.03 * norm)) ** 2 + (dist / 4.0) ** 2))
        expected[tuple(idx)] = min(best, 1.5)
    assert np.array_equal(np.isnan(ours), np.isnan(expected))
    assert np.nanmax(np.abs(ours - expected)) < 1e-9


def test_identical_and_empty() -> None:
    ref, _ = dose_pair((12, 12, 12))
    assert gamma_pass_rate(ref, ref, (3.0, 3.0, 3.0)) == 1.0
    assert math.isnan(gamma_pass_rate(np.zeros((5, 5, 5)) - 1, np.zeros((5, 5, 5)), (1, 1, 1)))
    with pytest.raises(ValueError, match="grids differ"):
        gamma_pass_rate(ref, ref[:-1], (3.0, 3.0, 3.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    ref, ev = dose_pair()
    s = GammaSettings(2, 2, 10, 10)
    assert gamma_pass_rate(ref, ev, (3, 3, 3), s, device="cuda") == pytest.approx(
        gamma_pass_rate(ref, ev, (3, 3, 3), s), abs=1e-9)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, ev = dose_pair()
    spacing_xyz = (3.0, 2.5, 2.0)
    write_image(tmp_path / "ref.mha", ref.astype(np.float32), spacing_xyz)
    write_image(tmp_path / "ev.mha", ev.astype(np.float32), spacing_xyz)
    code = main(["gamma", "--ref", str(tmp_path / "ref.mha"), "--eval", str(tmp_path / "ev.mha"),
                 "--dose-pct", "2", "--dta-mm", "2", "--cutoff-pct", "10",
                 "--interp-fraction", "10"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    expected = pymedphys_rate(ref.astype(np.float32).astype(np.float64),
                              ev.astype(np.float32).astype(np.float64), spacing_xyz[::-1],
                              GammaSettings(2, 2, 10, 10))
    assert abs(out["pass_rate"] - expected) <= 0.001
    assert out["settings"]["interp_fraction"] == 10
    write_image(tmp_path / "small.mha", ref[:-1].astype(np.float32), spacing_xyz)
    assert main(["gamma", "--ref", str(tmp_path / "ref.mha"),
                 "--eval", str(tmp_path / "small.mha")]) == 2
