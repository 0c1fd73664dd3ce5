"""The fused CPU loops give the bits of the torch passes they replace: numba's JIT build
(evaluator.image_kernels) and the ahead-of-time build (evaluator.image_kernels_aot).

Each test computes both ways on the same machine: the kernels model torch's rounding (fused
multiply-adds, the order of its 7-term sums), so any difference in any voxel fails here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import evaluator.image_metrics as im
from evaluator import image_kernels_aot

from .conftest import make_pair

pytestmark = pytest.mark.skipif(
    not im._fma_build(),
    reason="fused loops not used here (a torch build without FMA kernels)",
)


def _jit() -> Any:
    token = im._FUSED.set("jit")
    try:
        return im._kernels(torch.device("cpu"))
    finally:
        im._FUSED.reset(token)


@pytest.fixture(scope="session")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The ahead-of-time loops: the build setup made, else one built here (~20 s)."""
    if not image_kernels_aot.supported() or _jit() is None:
        pytest.skip("ahead-of-time loops need x86-64 and numba")
    ns = image_kernels_aot.load()
    if ns is None:
        out = tmp_path_factory.mktemp("aot")
        image_kernels_aot.build(out)
        ns = image_kernels_aot.load(out)
    assert ns is not None and ns.compiled
    return ns


@pytest.fixture(params=["jit", "compiled"])
def kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Each build of the loops in turn, as compute_image_metrics(fused=True) would use it."""
    if request.param == "jit":
        ns = _jit()
        if ns is None:
            pytest.skip("numba not installed")
        monkeypatch.setattr(im, "_COMPILED", [None])
    else:
        ns = request.getfixturevalue("compiled")
        monkeypatch.setattr(im, "_COMPILED", [ns])
    return ns


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
def test_plane_loop_matches_torch_passes_voxel_for_voxel(weight, kernels):
    # random plane sizes and rectangles, full-width ones included (there torch's loop runs
    # over the whole channel and its differently ordered tail sits at the end)
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
        kernels.plane_map(zsum.numpy(), y0, y1, x0, x1, m, (0, 0, 0), formula.c1, formula.c2,
                          weight is not None, weight is None, out, np.empty((4, nx + 1)))
        if weight is not None:
            kernels.mask_mul(im._pow_(torch.from_numpy(out), weight).numpy(), m, (0, 0, 0))
        assert np.array_equal(out, want, equal_nan=True), (ny, nx, (y0, y1, x0, x1))


@pytest.mark.parametrize("profile", ["synthrad2023", "synthrad2025"])
@pytest.mark.parametrize(("shape", "center", "radii", "dtype"), [
    ((33, 121, 157), (0.0, 0.0, 0.0), (1.2, 0.8, 0.9), np.float64),  # border mask
    ((40, 130, 111), (0.3, -0.4, 0.2), (0.5, 0.6, 0.5), np.float32),  # off-centre
    ((101, 98, 99), (0.0, 0.1, 0.0), (0.9, 0.7, 0.6), np.float32),  # >= 97 slices
    ((21, 60, 140), (0.0, 0.0, 0.0), (0.9, 0.7, 0.6), np.float64),  # narrow slices (2025)
])
def test_fused_and_torch_paths_give_the_same_bits(profile, shape, center, radii, dtype,
                                                  kernels):
    ct, sct, mask = make_pair(shape, seed=42, center=center, radii=radii)
    ct, sct = ct.astype(dtype), sct.astype(dtype)
    assert im._kernels(torch.device("cpu")) is kernels
    fused = im.compute_image_metrics(ct, sct, mask, profile)
    plain = im.compute_image_metrics(ct, sct, mask, profile, fused=False)
    assert {k: v.hex() for k, v in fused.items()} == {k: v.hex() for k, v in plain.items()}


@pytest.mark.parametrize(("ct_dtype", "sct_dtype"), [
    (np.int16, np.float32), (np.uint16, np.float32), (np.int32, np.int16)])
def test_input_dtypes_read_directly_or_converted_give_the_same_bits(ct_dtype, sct_dtype,
                                                                      kernels):
    # the compiled build reads float32/float64/int16 directly; other dtypes are converted
    # by torch first (the JIT reads them all): every way gives torch's values
    ct, sct, mask = make_pair((30, 70, 80), seed=5)
    ct, sct = np.clip(ct, 0, 3000).astype(ct_dtype), np.clip(sct, 0, 3000).astype(sct_dtype)
    for profile in ("synthrad2023", "synthrad2025"):
        fused = im.compute_image_metrics(ct, sct, mask, profile)
        plain = im.compute_image_metrics(ct, sct, mask, profile, fused=False)
        assert {k: v.hex() for k, v in fused.items()} == {k: v.hex() for k, v in plain.items()}


def test_compiled_loops_take_strided_arrays(compiled):
    # pycc's wrappers assume the exported C layout; strided inputs and outputs go through
    # contiguous copies (MS-SSIM's coarser levels pass strided slices): the JIT's result
    jit = _jit()
    rng = np.random.default_rng(3)
    big = rng.random((4, 30, 40))
    x, y = big[0, ::2, 1:36], big[1, 1::2, 2:37]  # strided views (15, 35)
    z1 = rng.random((4, 15, 35))
    z2 = z1.copy()
    jit.zsum_add(z1, x, y)
    compiled.zsum_add(z2, x, y)
    assert np.array_equal(z1, z2)
    out1, out2 = rng.random((6, 20))[:, ::2], np.zeros((6, 20))[:, ::2]
    out2[...] = out1
    m = (rng.random((1, 6, 10)) > 0.5).astype(np.uint8)
    jit.mask_mul(out1, m, (0, 0, 0))
    compiled.mask_mul(out2, m, (0, 0, 0))  # a strided output written back
    assert np.array_equal(out1, out2) and np.count_nonzero(out2) < out2.size


def test_a_build_of_other_code_is_not_loaded(compiled, tmp_path):
    # the extension's name carries the hash of the kernels' source: another name is ignored
    name = image_kernels_aot.module_name()
    src = compiled.path
    stale = tmp_path / src.name.replace(name, image_kernels_aot.PREFIX + "0" * 16)
    stale.write_bytes(src.read_bytes())
    assert image_kernels_aot.load(tmp_path) is None
    (tmp_path / src.name).write_bytes(src.read_bytes())
    assert image_kernels_aot.load(tmp_path) is not None
