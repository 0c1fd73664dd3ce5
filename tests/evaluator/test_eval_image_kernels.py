"""The fused CPU loops (evaluator.image_kernels) give the bits of the torch passes they replace.

Each test computes both ways on the same machine: the kernels model torch's rounding (fused
multiply-adds, the order of its 7-term sums), so any difference in any voxel fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import evaluator.image_metrics as im

from .conftest import make_pair

KERNELS = im._kernels(torch.device("cpu"))

pytestmark = pytest.mark.skipif(
    KERNELS is None,
    reason="fused loops not used here (no numba, or a torch build without FMA kernels)",
)


def _torch_plane(zsum: torch.Tensor, box: tuple[int, int, int, int], inside: torch.Tensor,
                 formula: im.SsimFormula) -> np.ndarray:
    """The plane's map as _masked_map_sum's torch passes compute it."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    wide = w + im.WIN - 1
    views = im._PlaneViews(torch.empty(4, h, wide, dtype=torch.float64),
                           torch.empty(4, h, wide, dtype=torch.float64),
                           torch.empty(4, h, w, dtype=torch.float64),
                           [torch.empty(h, w, dtype=torch.float64) for _ in range(3)],
                           torch.empty(h, w, dtype=torch.float64))
    region = zsum[:, y0 : y1 + im.WIN - 1, x0 : x1 + im.WIN - 1]
    plane = torch.sum(region.unfold(1, im.WIN, 1), -1, out=views.ysum)
    ssim_map = formula(views.box7(plane), views.scratch)
    return ssim_map.mul_(views.ones.copy_(inside.view(torch.uint8))).numpy().copy()


@pytest.mark.parametrize("weight", [None, 0.2856])
def test_plane_loop_matches_torch_passes_voxel_for_voxel(weight):
    # random plane sizes and rectangles, full-width ones included (there torch's loop runs
    # over the whole channel and its differently ordered tail sits at the end)
    assert KERNELS is not None
    rng = np.random.default_rng(41)
    formula = im.SsimFormula(4095.0, weight)
    for trial in range(60):
        ny, nx = (int(n) for n in rng.integers(8, 300, 2))
        x = rng.uniform(0, 4000, (im.WIN, ny, nx))
        y = x + rng.normal(0, 300, x.shape).clip(-x, None)
        zsum = torch.from_numpy(np.stack([x.sum(0), y.sum(0), (x * x + y * y).sum(0),
                                          (x * y).sum(0)]))
        if trial % 3:
            y0 = int(rng.integers(0, ny - 6))
            y1 = int(rng.integers(y0 + 1, ny - 5))
            x0, x1 = (0, nx - 6) if trial % 3 == 1 else (int(rng.integers(0, nx - 6)), 0)
            x1 = x1 or int(rng.integers(x0 + 1, nx - 5))
        else:
            y0, y1, x0, x1 = 0, ny - 6, 0, nx - 6
        inside = torch.from_numpy(rng.random((y1 - y0, x1 - x0)) < 0.8)
        want = _torch_plane(zsum, (y0, y1, x0, x1), inside, formula)
        out = np.empty_like(want)
        m = inside.view(torch.uint8).numpy()[None]
        KERNELS.plane_map(zsum.numpy(), y0, y1, x0, x1, m, (0, 0, 0), formula.c1, formula.c2,
                          weight is not None, weight is None, out, np.empty((4, nx + 1)))
        if weight is not None:
            KERNELS.mask_mul(im._pow_(torch.from_numpy(out), weight).numpy(), m, (0, 0, 0))
        assert np.array_equal(out, want, equal_nan=True), (ny, nx, (y0, y1, x0, x1))


@pytest.mark.parametrize("profile", ["synthrad2023", "synthrad2025"])
@pytest.mark.parametrize(("shape", "center", "radii", "dtype"), [
    ((33, 121, 157), (0.0, 0.0, 0.0), (1.2, 0.8, 0.9), np.float64),  # border mask
    ((40, 130, 111), (0.3, -0.4, 0.2), (0.5, 0.6, 0.5), np.float32),  # off-centre
    ((101, 98, 99), (0.0, 0.1, 0.0), (0.9, 0.7, 0.6), np.float32),  # >= 97 slices
    ((21, 60, 140), (0.0, 0.0, 0.0), (0.9, 0.7, 0.6), np.float64),  # narrow slices (2025)
])
def test_fused_and_torch_paths_give_the_same_bits(profile, shape, center, radii, dtype):
    ct, sct, mask = make_pair(shape, seed=42, center=center, radii=radii)
    ct, sct = ct.astype(dtype), sct.astype(dtype)
    fused = im.compute_image_metrics(ct, sct, mask, profile)
    plain = im.compute_image_metrics(ct, sct, mask, profile, fused=False)
    assert {k: v.hex() for k, v in fused.items()} == {k: v.hex() for k, v in plain.items()}
