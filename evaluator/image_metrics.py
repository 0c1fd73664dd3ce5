"""SynthRAD image metrics (MAE, PSNR, SSIM / masked MS-SSIM) in torch, CPU or CUDA.

Two profiles reproduce the published evaluation code exactly (up to float64 rounding):

* ``synthrad2023`` -- github.com/SynthRAD2023/metrics ``image_metrics.py``: MAE in the mask
  (no clipping); PSNR on mask voxels after clipping to [-1024, 3000] (range 4024); SSIM of
  scikit-image (7x7x7 uniform window, K1=0.01, K2=0.03, sample covariance, range 4024) on the
  clipped volumes with outside-mask voxels set to -1024 and shifted by +1024, averaged over
  the mask voxels of the map cropped by 3 voxels at every border.
* ``synthrad2025`` -- github.com/SynthRAD2025/evaluation ``image_metrics.py``: outside-mask
  voxels set to -1024 first; MAE; PSNR on [-1024, 3071] (range 4095); masked MS-SSIM
  (see :func:`_masked_ms_ssim`), including its quirks: edge padding to 97 voxels per axis,
  the luminance term raised to every level's weight, the 2x2x2 down-sampling filter applied
  with ``fftconvolve(mode="same")`` (zero padding before the first voxel of each axis).

Speed comes from (1) running the 7-voxel box sums as separable valid-mode sums on slabs,
(2) evaluating the SSIM formula only at mask voxels, and (3) restricting the work to the
mask's bounding box plus the margin each definition needs -- outside the mask both images
are constant, so the result is unchanged (the tests pin this against the references).
The published code runs in float32 where its inputs are float32; we always use float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch

from evaluator.errors import EvaluationInputError
from evaluator.io import Volume

Profile = Literal["synthrad2023", "synthrad2025"]
PROFILES: tuple[str, ...] = get_args(Profile)

WIN = 7  # uniform window edge (voxels)
PAD = (WIN - 1) // 2  # border cropped from every SSIM map
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIZE = 97  # the 2025 code edge-pads every axis to at least this many voxels


@dataclass(frozen=True)
class ProfileSpec:
    hu_min: float
    hu_max: float
    keys: tuple[str, str, str]

    @property
    def data_range(self) -> float:
        return self.hu_max - self.hu_min


PROFILE_SPECS: dict[str, ProfileSpec] = {
    "synthrad2023": ProfileSpec(-1024.0, 3000.0, ("mae", "psnr", "ssim")),
    "synthrad2025": ProfileSpec(-1024.0, 3071.0, ("mae", "psnr", "ms_ssim")),
}

ArrayLike = np.ndarray[Any, Any] | torch.Tensor | Volume


def _to_tensor(a: ArrayLike, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, Volume):
        a = a.array
    if isinstance(a, torch.Tensor):
        return a.to(device=device, dtype=dtype)
    arr = np.asarray(a)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=dtype)


def _bbox(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Inclusive (first, last) index of True voxels along each axis."""
    out = []
    for d in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != d)
        idx = torch.nonzero(mask.any(dim=other)).flatten()
        out.append((int(idx[0]), int(idx[-1])))
    return out


# ---------------------------------------------------------------------------------------
# Box sums and local statistics
# ---------------------------------------------------------------------------------------


class _BoxSums:
    """Valid-mode 7x7x7 box sums of a (C, Z, Y, X) stack, slab by slab, into reused buffers.

    Each axis is summed by doubling (x[i]+x[i+1], then pairs of those, then 4+2+1), four
    additions per voxel and axis, written with ``out=`` into buffers allocated once: fresh
    large allocations (page faults) otherwise cost more than the arithmetic on CPU.
    """

    def __init__(self, channels: int, zmax: int, ny: int, nx: int, like: torch.Tensor) -> None:
        def buf(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=like.dtype, device=like.device)

        self.src = buf(channels, zmax, ny, nx)
        self.bufs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        shape = [channels, zmax, ny, nx]
        for dim in (1, 2, 3):
            s2, s4, s7 = list(shape), list(shape), list(shape)
            s2[dim] -= 1
            s4[dim] -= 3
            s7[dim] -= WIN - 1
            self.bufs.append((buf(*s2), buf(*s4), buf(*s7)))
            shape = s7

    def __call__(self, nz: int) -> torch.Tensor:
        """Box sums of ``self.src[:, :nz]`` -> (C, nz - 6, Y - 6, X - 6) (a buffer view)."""
        t = self.src.narrow(1, 0, nz)
        for dim, (b2, b4, b7) in zip((1, 2, 3), self.bufs, strict=True):
            n = t.shape[dim]
            zlen = t.shape[1]

            if dim != 1:  # buffers hold zmax slices; use the first zlen
                b2, b4, b7 = (b.narrow(1, 0, zlen) for b in (b2, b4, b7))
            s2, s4 = b2.narrow(dim, 0, n - 1), b4.narrow(dim, 0, n - 3)
            s7 = b7.narrow(dim, 0, n - 6)
            torch.add(t.narrow(dim, 0, n - 1), t.narrow(dim, 1, n - 1), out=s2)
            torch.add(s2.narrow(dim, 0, n - 3), s2.narrow(dim, 2, n - 3), out=s4)
            torch.add(s4.narrow(dim, 0, n - 6), s2.narrow(dim, 4, n - 6), out=s7)
            s7.add_(t.narrow(dim, 6, n - 6))
            t = s7
        return t


def _slab_bytes(device: torch.device) -> int:
    return 2**30 if device.type == "cuda" else 160 * 2**20


# A formula turns the (5, z, y, x) stack of local means [ux, uy, uxx, uyy, uxy] into the
# SSIM-type map, in place, using three scratch tensors of the map's shape; returns the map.
Formula = Any


def _masked_map_sum(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, formula: Formula
) -> tuple[float, int]:
    """Sum and count of an SSIM-type map over ``crop(mask, 3)`` (x, y already prepared)."""
    nz, ny, nx = x.shape
    if min(nz, ny, nx) < WIN:
        return 0.0, 0
    outside = ~mask[PAD : nz - PAD, PAD : ny - PAD, PAD : nx - PAD]
    per_slice = 8 * ny * nx * x.element_size()
    step = max(4, _slab_bytes(x.device) // per_slice - (WIN - 1))
    step = min(step, nz - (WIN - 1))
    box = _BoxSums(5, step + WIN - 1, ny, nx, x)
    scratch = [torch.empty((step, ny - WIN + 1, nx - WIN + 1), dtype=x.dtype, device=x.device)
               for _ in range(3)]
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    count = 0
    for a in range(0, nz - (WIN - 1), step):
        b = min(a + step, nz - (WIN - 1))
        out = outside[a:b]
        n_sel = out.numel() - int(out.sum())
        if n_sel == 0:
            continue
        zlen = b - a + WIN - 1
        xs, ys = x[a : a + zlen], y[a : a + zlen]
        src = box.src.narrow(1, 0, zlen)
        src[0].copy_(xs)
        src[1].copy_(ys)
        torch.mul(xs, xs, out=src[2])
        torch.mul(ys, ys, out=src[3])
        torch.mul(xs, ys, out=src[4])
        means = box(zlen).mul_(1.0 / WIN**3)
        ssim_map = formula(means, [s.narrow(0, 0, b - a) for s in scratch])
        total += ssim_map.masked_fill_(out, 0.0).sum(dtype=torch.float64)
        count += n_sel
    return float(total), count


def _ssim_2023_formula(data_range: float) -> Formula:
    """scikit-image ``structural_similarity`` map (uniform window, sample covariance)."""
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    cov_norm = WIN**3 / (WIN**3 - 1)

    def f(u: torch.Tensor, scratch: list[torch.Tensor]) -> torch.Tensor:
        ux, uy, uxx, uyy, uxy = u.unbind(0)
        p, _, _ = scratch
        torch.mul(ux, uy, out=p)
        uxy.sub_(p).mul_(2 * cov_norm).add_(c2)  # A2 = 2 vxy + C2
        uxx.add_(uyy)
        ux.mul_(ux)
        uy.mul_(uy)
        uxx.sub_(ux).sub_(uy).mul_(cov_norm).add_(c2)  # B2 = vx + vy + C2
        ux.add_(uy).add_(c1)  # B1 = ux^2 + uy^2 + C1
        p.mul_(2).add_(c1)  # A1 = 2 ux uy + C1
        p.mul_(uxy)
        ux.mul_(uxx)
        return p.div_(ux)

    return f


def _ssim_2025_formula(data_range: float, weight: float) -> Formula:
    """SynthRAD2025 ``structural_similarity_at_scale``: clipped l, c, s each ** weight."""
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    c3 = c2 / 2
    cov_norm = WIN**3 / (WIN**3 - 1)

    def f(u: torch.Tensor, scratch: list[torch.Tensor]) -> torch.Tensor:
        ux, uy, vx, vy, vxy = u.unbind(0)
        p, q, r = scratch
        torch.mul(ux, uy, out=p)
        vxy.sub_(p).mul_(cov_norm)
        torch.mul(ux, ux, out=q)
        vx.sub_(q).mul_(cov_norm)
        torch.mul(uy, uy, out=r)
        vy.sub_(r).mul_(cov_norm)
        q.add_(r).add_(c1)
        p.mul_(2).add_(c1).div_(q).clamp_(min=0)  # luminance
        torch.clamp(vx, min=0, out=q).sqrt_()
        torch.clamp(vy, min=0, out=r).sqrt_()
        q.mul_(r)  # sqrt(vx) sqrt(vy)
        vx.add_(vy).add_(c2)
        torch.mul(q, 2, out=r).add_(c2).div_(vx).clamp_(min=0)  # contrast
        q.add_(c3)
        vxy.add_(c3).div_(q).clamp_(min=0)  # structure
        # The published code raises the luminance term to every level's weight too;
        # (l c s) ** w equals l**w * c**w * s**w up to rounding.
        return p.mul_(r).mul_(vxy).pow_(weight)

    return f


# ---------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------


def _mae_psnr(
    ct: torch.Tensor, sct: torch.Tensor, mask: torch.Tensor, spec: ProfileSpec
) -> tuple[float, float]:
    """MAE over the mask (no clipping) and PSNR over the mask after clipping both images."""
    abs_sum = torch.zeros((), dtype=torch.float64, device=ct.device)
    sq_sum = torch.zeros((), dtype=torch.float64, device=ct.device)
    step = max(1, (2 * 2**20) // max(1, ct.shape[1] * ct.shape[2]))  # ~2 M voxels per chunk
    for a in range(0, ct.shape[0], step):
        c, s, outside = ct[a : a + step], sct[a : a + step], ~mask[a : a + step]
        d = torch.sub(c, s)
        abs_sum += d.abs_().masked_fill_(outside, 0.0).sum()
        torch.sub(c.clamp(spec.hu_min, spec.hu_max), s.clamp(spec.hu_min, spec.hu_max), out=d)
        sq_sum += d.square_().masked_fill_(outside, 0.0).sum()
    n = int(mask.sum())
    mae = float(abs_sum) / n
    mse = float(sq_sum) / n
    psnr = float("inf") if mse == 0.0 else 10.0 * float(np.log10(spec.data_range**2 / mse))
    return mae, psnr


def _prepare(t: torch.Tensor, mask: torch.Tensor, spec: ProfileSpec) -> torch.Tensor:
    """Clip to the profile range, set outside-mask voxels to its minimum, shift to >= 0."""
    out = t.clamp(spec.hu_min, spec.hu_max)
    return out.masked_fill_(~mask, spec.hu_min).sub_(spec.hu_min)


def _masked_ssim_2023(
    ct: torch.Tensor, sct: torch.Tensor, mask: torch.Tensor, bbox: list[tuple[int, int]]
) -> float:
    spec = PROFILE_SPECS["synthrad2023"]
    if min(ct.shape) < WIN:
        raise EvaluationInputError(
            f"image size {tuple(ct.shape[::-1])} is smaller than the {WIN}-voxel SSIM window"
        )
    # Outside the mask both images are the constant 0 after masking and shifting, so the
    # mask's bounding box plus the 3-voxel window radius gives exactly the same map there.
    crop = tuple(
        slice(max(0, lo - PAD), min(n, hi + 1 + PAD))
        for (lo, hi), n in zip(bbox, ct.shape, strict=True)
    )
    m = mask[crop]
    x, y = _prepare(ct[crop], m, spec), _prepare(sct[crop], m, spec)
    total, count = _masked_map_sum(x, y, m, _ssim_2023_formula(spec.data_range))
    return total / count if count else float("nan")


def _edge_pad_to(t: torch.Tensor, size: int) -> torch.Tensor:
    pads: list[int] = []
    for n in reversed(t.shape):  # F.pad wants the last axis first
        extra = max(0, size - n)
        pads += [extra // 2, extra - extra // 2]
    if not any(pads):
        return t
    return torch.nn.functional.pad(t[None, None], pads, mode="replicate")[0, 0]


def _down2(t: torch.Tensor) -> torch.Tensor:
    """``fftconvolve(t, ones((2, 2, 2)) / 8, mode="same")[::2, ::2, ::2]``.

    Output voxel j along an axis averages input voxels 2j-1 and 2j, with a zero before the
    first voxel (that is what ``mode="same"`` does with an even-sized kernel).
    """
    p = torch.nn.functional.pad(t[None, None], (1, 0, 1, 0, 1, 0))[0, 0]
    mz, my, mx = (n // 2 for n in p.shape)
    p = p[: 2 * mz, : 2 * my, : 2 * mx].reshape(mz, 2, my, 2, mx, 2)
    return p.sum(dim=(1, 3, 5)) * 0.125


def _aligned_crop(lo: int, hi: int, n: int, align: int, margin: int) -> slice:
    """Crop [lo, hi] with ``margin`` on both sides, start aligned, at least 97 long."""
    start = max(0, ((lo - margin) // align) * align)
    stop = min(n, hi + 1 + margin)
    if stop - start < MS_SSIM_MIN_SIZE:
        stop = min(n, start + MS_SSIM_MIN_SIZE)
        start = max(0, ((stop - MS_SSIM_MIN_SIZE) // align) * align)
    return slice(start, stop)


def _masked_ms_ssim_2025(ct: torch.Tensor, sct: torch.Tensor, mask: torch.Tensor) -> float:
    spec = PROFILE_SPECS["synthrad2025"]
    levels = len(MS_SSIM_WEIGHTS)

    def prepare(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return _prepare(t, m, spec)

    if min(ct.shape) < MS_SSIM_MIN_SIZE:  # small volume: pad the whole thing, as published
        x = _edge_pad_to(prepare(ct, mask), MS_SSIM_MIN_SIZE)
        y = _edge_pad_to(prepare(sct, mask), MS_SSIM_MIN_SIZE)
        m = _edge_pad_to(mask.to(x.dtype), MS_SSIM_MIN_SIZE) > 0
    else:
        x, y, m = ct, sct, mask
    # Outside the (padded) mask both images are 0 at every level; a crop aligned to the
    # coarsest sampling grid with a margin of (window radius + 1) coarse voxels reproduces
    # the full computation exactly (including the zero padding of the down-sampling).
    align = 2 ** (levels - 1)
    crop = tuple(
        _aligned_crop(lo, hi, n, align, (PAD + 1) * align)
        for (lo, hi), n in zip(_bbox(m), m.shape, strict=True)
    )
    if x is ct:
        m = mask[crop]
        x, y = prepare(ct[crop], m), prepare(sct[crop], m)
    else:
        x, y, m = x[crop], y[crop], m[crop]
    product = 1.0
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        total, count = _masked_map_sum(x, y, m, _ssim_2025_formula(spec.data_range, weight))
        value = total / count if count else float("nan")
        product *= min(max(value, 0.0), 1.0) if value == value else value
        if level < levels - 1:
            x, y, m = _down2(x), _down2(y), m[::2, ::2, ::2]
    return product


def compute_image_metrics(
    ct: ArrayLike,
    sct: ArrayLike,
    mask: ArrayLike,
    profile: str = "synthrad2023",
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Image metrics of a synthetic CT against its CT inside a body mask.

    ``ct``/``sct``/``mask``: arrays (any order, but the same for all three), tensors or
    Volumes; the mask is binarised as ``mask > 0``. Returns ``{"mae", "psnr", "ssim"}`` for
    ``synthrad2023`` and ``{"mae", "psnr", "ms_ssim"}`` for ``synthrad2025``. A mask whose
    voxels all lie within 3 voxels of the border gives a NaN (M)S-SSIM, as the published
    code does; a perfect prediction gives ``psnr = inf``.
    """
    if profile not in PROFILE_SPECS:
        raise EvaluationInputError(
            f"unknown profile {profile!r} (expected one of {', '.join(PROFILES)})"
        )
    spec = PROFILE_SPECS[profile]
    dev = torch.device(device)
    ct_t = _to_tensor(ct, dev, torch.float64)
    sct_t = _to_tensor(sct, dev, torch.float64)
    mask_t = _to_tensor(mask, dev, torch.float64) > 0
    if ct_t.ndim != 3 or ct_t.shape != sct_t.shape or ct_t.shape != mask_t.shape:
        raise EvaluationInputError(
            f"CT, sCT and mask must be 3-D arrays of one shape, got {tuple(ct_t.shape)}, "
            f"{tuple(sct_t.shape)} and {tuple(mask_t.shape)}"
        )
    if not bool(mask_t.any()):
        raise EvaluationInputError("mask is empty (no voxel > 0)")
    with torch.no_grad():
        bbox = _bbox(mask_t)
        box = tuple(slice(lo, hi + 1) for lo, hi in bbox)
        mae, psnr = _mae_psnr(ct_t[box], sct_t[box], mask_t[box], spec)
        if profile == "synthrad2023":
            ssim = _masked_ssim_2023(ct_t, sct_t, mask_t, bbox)
            return {"mae": mae, "psnr": psnr, "ssim": ssim}
        ms_ssim = _masked_ms_ssim_2025(ct_t, sct_t, mask_t)
        return {"mae": mae, "psnr": psnr, "ms_ssim": ms_ssim}
