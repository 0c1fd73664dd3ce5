"""SynthRAD image metrics (MAE, PSNR, SSIM / masked MS-SSIM) in torch, CPU or CUDA.

Two profiles reproduce the published evaluation code exactly (up to float64 rounding):

* ``synthrad2023`` -- github.com/SynthRAD2023/metrics ``image_metrics.py``: MAE in the mask
  (no clipping); PSNR on mask voxels after clipping to [-1024, 3000] (range 4024); SSIM of
  scikit-image (7x7x7 uniform window, K1=0.01, K2=0.03, sample covariance, range 4024) on the
  clipped volumes with outside-mask voxels set to -1024 and shifted by +1024, averaged over
  the mask voxels of the map cropped by 3 voxels at every border.
* ``synthrad2025`` -- github.com/SynthRAD2025/evaluation ``image_metrics.py``: outside-mask
  voxels set to -1024 first; MAE; PSNR on [-1024, 3071] (range 4095); masked MS-SSIM
  (see :func:`_profile_2025`), including its quirks: edge padding to 97 voxels per axis,
  the luminance term raised to every level's weight, the 2x2x2 down-sampling filter applied
  with ``fftconvolve(mode="same")`` (zero padding before the first voxel of each axis).

Speed comes from (1) 7-voxel box sums done as a running sum along z (a ring of the last 7
prepared (x, y) slices; the products are added and subtracted with ``addcmul``, never
stored), then a 7-term sum along y and a running sum along x, plane by plane; (2) loading,
scoring MAE/PSNR, clipping, masking, edge padding along z and (MS-SSIM) down-sampling to the
next level slice by slice inside that loop; (3) restricting the work to the mask's bounding
box plus the margin each definition needs, and the y/x sums and the SSIM formula of each
plane to the rectangle holding that plane's mask voxels -- outside the mask both images are
constant and the map is only averaged over mask voxels, so the result is unchanged (the
tests pin this against the references); (4) one SSIM formula for both profiles with one
division per voxel (the terms' ratios multiplied out; the 2025 contrast-structure product
needs no square root, see :class:`SsimFormula`) and ``exp(w log v)`` in numpy for the
MS-SSIM power; (5) on the CPU, the per-slice and per-plane passes (load and score a slice,
slide the 7-slice sums, y/x box sums + formula + mask of a plane, level-1 down-sampling) as
fused loops compiled by numba (:mod:`evaluator.image_kernels`): the same operations per
voxel in the same order, so the same bits (tested against the torch passes, which still run
on CUDA, without numba, and with ``fused=False``). The published code computes in float32
when its inputs are float32 (differences ~1e-5); we always compute in float64, which is
what the tests compare.

Determinism: on the CPU the result is bit-identical across runs and torch thread counts.
Sums over planes run in a fixed order (:class:`evaluator.reductions.Total`), the
transcendental functions in numpy (single-threaded); every other operation is element-wise
IEEE arithmetic, whose value does not depend on how torch splits it between threads.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch

from evaluator.errors import EvaluationInputError
from evaluator.io import Volume
from evaluator.reductions import PhaseClock, Total

Profile = Literal["synthrad2023", "synthrad2025"]
PROFILES: tuple[str, ...] = get_args(Profile)

WIN = 7  # uniform window edge (voxels)
PAD = (WIN - 1) // 2  # border cropped from every SSIM map
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIZE = 97  # the 2025 code edge-pads every axis to at least this many voxels
# Which fused CPU loops the current call may use (compute_image_metrics(fused=...)): True the
# ahead-of-time build (evaluator.image_kernels_aot) where there is one, else numba's JIT;
# "compiled" only the former; "jit" only the latter; False neither (torch's passes).
_FUSED: ContextVar[bool | str] = ContextVar("image_metrics_fused", default=True)
_COMPILED: list[Any] = []  # [image_kernels_aot.load()] once looked for
_LOADED: list[Any] = []  # [evaluator.image_kernels.KERNELS (None without numba)] once imported


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


def _raw(a: ArrayLike) -> torch.Tensor:
    """The input as a tensor without copying (numpy arrays stay on the CPU, in their dtype)."""
    if isinstance(a, Volume):
        a = a.array
    if isinstance(a, torch.Tensor):
        return a
    arr = np.asarray(a)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if any(s < 0 for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        # A read-only view (read_volume(copy=False)): only read here, never written, so
        # torch's warning about non-writable arrays does not apply.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr)
    return torch.from_numpy(arr)


def _bbox(mask: torch.Tensor) -> list[tuple[int, int]] | None:
    """Inclusive (first, last) index of nonzero voxels along each axis; None when empty.

    ``mask``: bool or an unsigned integer type (nonzero = set). ``amax`` reductions (the
    first over the outer axis) are several times faster than ``any`` on CPU.
    """
    u = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
    yx = u.amax(dim=0)
    out = []
    for proj in (u.amax(dim=(1, 2)), yx.amax(dim=1), yx.amax(dim=0)):
        idx = torch.nonzero(proj).flatten()
        if idx.numel() == 0:
            return None
        out.append((int(idx[0]), int(idx[-1])))
    return out


def _binary(mask: torch.Tensor) -> torch.Tensor:
    """``mask > 0`` as bool (no copy when it already is; for uint8 that is ``!= 0``, which
    the bool conversion does faster)."""
    if mask.dtype == torch.bool:
        return mask
    return mask.to(torch.bool) if mask.dtype == torch.uint8 else mask > 0


def _load(t: torch.Tensor, crop: tuple[slice, ...], device: torch.device) -> torch.Tensor:
    """A float64 copy of ``t[crop]`` on ``device`` (never a view: it is modified in place)."""
    return t[crop].to(device=device, dtype=torch.float64, copy=True)


class _Workspace(threading.local):
    """Float64 CPU buffers of the map passes kept per thread between calls, by purpose:
    fresh memory for them costs thousands of page faults per call (~10 % of the 2023
    profile on 96 x 384 x 384). Holds ~40 planes of the largest
    mask box seen (~85 MB for 512 x 512 planes)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}


_WORKSPACE = _Workspace()


def _buffer(name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """An uninitialised float64 tensor of ``shape`` for one purpose (``name``, distinct from
    every buffer in use at the same time); on the CPU the memory of the previous call."""
    if device.type != "cpu":  # torch's caching allocator already reuses device memory
        return torch.empty(shape, dtype=torch.float64, device=device)
    n = math.prod(shape)
    held = _WORKSPACE.buffers.get(name)
    if held is None or held.numel() < n:
        held = _WORKSPACE.buffers[name] = torch.empty(n, dtype=torch.float64)
    return held[:n].view(shape)


# ---------------------------------------------------------------------------------------
# Box sums and local statistics
# ---------------------------------------------------------------------------------------


class _PlaneViews:
    """The buffers of one plane rectangle's shape, viewed once (per plane, the views cost
    about as much as the smaller operations)."""

    def __init__(self, ysum: torch.Tensor, csum: torch.Tensor, out: torch.Tensor,
                 scratch: list[torch.Tensor], ones: torch.Tensor) -> None:
        self.ysum, self.scratch, self.ones = ysum, scratch, ones
        self._csum, self._out = csum, out
        n = csum.shape[2]
        self._first = (out.narrow(2, 0, 1), csum.narrow(2, WIN - 1, 1))
        self._rest = (csum.narrow(2, WIN, n - WIN), csum.narrow(2, 0, n - WIN),
                      out.narrow(2, 1, n - WIN))

    def box7(self, t: torch.Tensor) -> torch.Tensor:
        """Valid-mode sum of 7 consecutive voxels along x (n -> n - 6) of ``t`` (shaped
        like ``ysum``), into ``out``.

        A running (cumulative) sum and one subtraction, into preallocated buffers (fresh
        large allocations cost more than the arithmetic on CPU). The rounding error stays
        ~1e-16 of the plane's total, far below what the SSIM formula can see.
        """
        torch.cumsum(t, 2, out=self._csum)
        self._first[0].copy_(self._first[1])
        later, earlier, out = self._rest
        torch.sub(later, earlier, out=out)
        return self._out


# A formula turns the (4, y, x) stack of local 7x7x7 sums [Sx, Sy, S(x^2 + y^2), Sxy] into
# the SSIM-type map, in place, using three scratch planes of the map's shape, and returns it.
Formula = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]
# fill(z, out): the prepared slices x, y of input slice z as one (2, y, x) tensor: ``out``,
# written, or a view of where they already are.
SliceFill = Callable[[int, torch.Tensor], torch.Tensor]


def _product_fill(xy: torch.Tensor) -> SliceFill:
    """Slice fill from already prepared images (2, z, y, x): views, no copy."""

    def fill(z: int, out: torch.Tensor) -> torch.Tensor:
        return xy[:, z]

    return fill


def _accumulator(
    zsum: torch.Tensor,
) -> tuple[Callable[[torch.Tensor], None], Callable[[torch.Tensor, torch.Tensor], None]]:
    """add(s): zsum += [x, y, x^2 + y^2, xy] of the stacked slice s = (x, y);
    slide(old, new): the same with ``old`` subtracted first, then ``new`` added.

    The products are never stored: adding and later subtracting a slice recompute them
    identically (add/addcmul evaluate alpha * b and value * t1 * t2 exactly alike for
    +-1), so the ring only keeps the two prepared slices. ``slide`` updates one sum after
    the other (subtract, then add, while that plane is in cache): every voxel sees the same
    operations in the same order as subtracting the whole slice, then adding the other.
    """
    first2, sss, sxy = zsum[0:2], zsum[2], zsum[3]

    def add(s: torch.Tensor) -> None:
        xs, ys = s.unbind(0)
        first2.add_(s, alpha=1.0)
        sss.addcmul_(xs, xs, value=1.0).addcmul_(ys, ys, value=1.0)
        sxy.addcmul_(xs, ys, value=1.0)

    def slide(old: torch.Tensor, new: torch.Tensor) -> None:
        xo, yo = old.unbind(0)
        xn, yn = new.unbind(0)
        first2.add_(old, alpha=-1.0).add_(new, alpha=1.0)
        sss.addcmul_(xo, xo, value=-1.0).addcmul_(yo, yo, value=-1.0)
        sss.addcmul_(xn, xn, value=1.0).addcmul_(yn, yn, value=1.0)
        sxy.addcmul_(xo, yo, value=-1.0).addcmul_(xn, yn, value=1.0)

    return add, slide


_DIRECT = (torch.float32, torch.float64, torch.int16, torch.uint16, torch.int32, torch.uint8,
           torch.int8)


def _fma_build() -> bool:
    """Whether torch's addcmul / add(alpha) are fused multiply-adds and its y sum's order is
    the one the kernels model (checked on AVX2 and AVX512 builds; the DEFAULT build rounds
    the products first)."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _kernels(device: torch.device) -> Any:
    """The fused CPU loops when this call uses them, else None: the ahead-of-time build
    (:mod:`evaluator.image_kernels_aot`, loads in ~1 ms) or numba's JIT
    (:mod:`evaluator.image_kernels`, imported on first use: numba costs ~0.3 CPU s to import,
    ~0.5 s to start)."""
    mode = _FUSED.get()
    if device.type != "cpu" or not mode or not _fma_build():
        return None
    if mode is True or mode == "compiled":
        if not _COMPILED:
            from evaluator import image_kernels_aot

            _COMPILED.append(image_kernels_aot.load())
        if _COMPILED[0] is not None or mode == "compiled":
            return _COMPILED[0]
    if not _LOADED:
        try:
            from evaluator import image_kernels
        except (ImportError, RuntimeError, OSError) as exc:  # e.g. no writable numba cache
            warnings.warn(f"fused image-metric loops unavailable ({exc}); torch's passes run "
                          "instead (the same values, about half the speed)", stacklevel=2)
            _LOADED.append(None)
        else:
            _LOADED.append(image_kernels.KERNELS)
    return _LOADED[0]


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _fused(device: torch.device, formula: Formula) -> Any:
    """The fused loops for a map pass with ``formula``, else None."""
    kernels = _kernels(device)
    return kernels if kernels is not None and isinstance(formula, SsimFormula) else None


def c_base(a: torch.Tensor) -> tuple[np.ndarray[Any, Any], tuple[int, ...]]:
    """A CPU tensor as (C-contiguous numpy array, index of its first element there): the
    tensor it is a box of when it is one (no copy), else itself made contiguous (a copy
    only when it is not). The kernels index whole arrays: rows of C-contiguous arrays
    vectorise, rows of strided views do not."""
    base = a._base
    if (isinstance(base, torch.Tensor) and base.ndim == a.ndim and base.is_contiguous()
            and a.stride() == base.stride() and base.dtype == a.dtype):
        off = a.storage_offset() - base.storage_offset()
        index = []
        for stride in base.stride():
            index.append(off // stride)
            off %= stride
        return base.detach().numpy(), tuple(index)
    return a.detach().contiguous().numpy(), (0,) * a.ndim


def _fused_accumulator(
    kernels: Any, zsum: torch.Tensor,
) -> tuple[Callable[[torch.Tensor], None], Callable[[torch.Tensor, torch.Tensor], None]]:
    """:func:`_accumulator` as one fused loop per slice (the same operations per voxel)."""
    z = zsum.numpy()

    def add(s: torch.Tensor) -> None:
        kernels.zsum_add(z, s[0].numpy(), s[1].numpy())

    def slide(old: torch.Tensor, new: torch.Tensor) -> None:
        kernels.zsum_slide(z, old[0].numpy(), old[1].numpy(), new[0].numpy(), new[1].numpy())

    return add, slide


def _plane_boxes(inside: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """Per slice of ``inside`` (bool, z y x): (y0, y1, x0, x1) bounding its True voxels
    (end-exclusive), or None where the slice has none."""
    u = inside.view(torch.uint8)
    rows, cols = u.amax(dim=2), u.amax(dim=1)  # (nz, ny), (nz, nx)
    any_z = rows.amax(dim=1).tolist()
    ny, nx = rows.shape[1], cols.shape[1]
    y0 = rows.argmax(dim=1).tolist()
    y1 = (ny - rows.flip(1).argmax(dim=1)).tolist()
    x0 = cols.argmax(dim=1).tolist()
    x1 = (nx - cols.flip(1).argmax(dim=1)).tolist()
    return [(y0[i], y1[i], x0[i], x1[i]) if any_z[i] else None for i in range(len(any_z))]


def _masked_map_sum(
    fill: SliceFill, mask: torch.Tensor, formula: Formula, clock: PhaseClock, phase: str
) -> tuple[float, int]:
    """Sum and count of an SSIM-type map over ``crop(mask, 3)``.

    Walks the output slices along z with a running 7-slice sum of the per-voxel products
    (a ring of 7 product planes: subtract the plane leaving the window, add the one
    entering), then box-sums each plane along y and x, only over the rectangle that holds
    the plane's (cropped) mask voxels: the map is only summed there. The working set is a
    few planes. ``fill`` is called exactly once per input slice, in order (it books its own
    phases on ``clock``; the rest is booked as ``phase``).
    """
    nz, ny, nx = mask.shape
    if min(nz, ny, nx) < WIN:
        return 0.0, 0
    inside = mask[PAD : nz - PAD, PAD : ny - PAD, PAD : nx - PAD]
    count = _count(inside)
    boxes = _plane_boxes(inside) if count else []

    def buf(name: str, *shape: int) -> torch.Tensor:
        return _buffer(f"map.{name}", shape, mask.device)

    c, my, mx = 4, ny - WIN + 1, nx - WIN + 1
    # the last 7 prepared (x, y) slices and the one entering the window (slot z % 8)
    ring = buf("ring", WIN + 1, 2, ny, nx)
    held: list[torch.Tensor] = []
    zsum = buf("zsum", c, ny, nx).zero_()
    add, slide = _accumulator(zsum)
    fused = _fused(mask.device, formula)
    if fused is not None:  # the same operations per voxel, fused: one map plane of buffers
        add, slide = _fused_accumulator(fused, zsum)
        plane_out, plane_row = buf("scratch0", my * mx), buf("row", c, nx + 1).numpy()
        zsum_np = zsum.numpy()
        inside_np, (iz, iy, ix) = c_base(inside)
        inside_u8 = inside_np.view(np.uint8)
    else:
        # flat buffers: each plane's rectangle gets contiguous views of their first elements
        ybuf, xcsum = buf("ysum", c * my * nx), buf("csum", c * my * nx)
        xbuf = buf("box", c * my * mx)
        scratch = [buf(f"scratch{k}", my * mx) for k in range(3)]
        weight = buf("ones", my * mx)  # the plane's mask voxels as 1.0 / 0.0
    shapes: dict[tuple[int, int], _PlaneViews] = {}
    total = Total(mask.device)

    for z in range(WIN):
        held.append(fill(z, ring[z]))
        add(held[z])
        clock.lap(phase)
    held.append(ring[WIN])
    for i in range(nz - WIN + 1):
        if i > 0:  # slide the window: slice i-1 leaves, slice i+6 enters
            clock.lap(phase)
            new = held[(i + WIN - 1) % (WIN + 1)] = fill(
                i + WIN - 1, ring[(i + WIN - 1) % (WIN + 1)])
            slide(held[(i - 1) % (WIN + 1)], new)
        if not boxes or (box := boxes[i]) is None:
            clock.lap(phase)
            continue
        y0, y1, x0, x1 = box
        h, w = y1 - y0, x1 - x0
        if fused is not None:
            assert isinstance(formula, SsimFormula)
            out = plane_out[: h * w].view(h, w)
            at = (iz + i, iy + y0, ix + x0)
            fused.plane_map(zsum_np, y0, y1, x0, x1, inside_u8, at, formula.c1,
                            formula.c2, formula.weight is not None, formula.weight is None,
                            out.numpy(), plane_row)
            if formula.weight is not None:
                fused.mask_mul(_pow_(out, formula.weight).numpy(), inside_u8, at)
            total.add_part(Total.part(out))
            clock.lap(phase)
            continue
        if (views := shapes.get((h, w))) is None:  # planes' rectangles often repeat
            wide = w + WIN - 1
            views = shapes[(h, w)] = _PlaneViews(
                ybuf[: c * h * wide].view(c, h, wide), xcsum[: c * h * wide].view(c, h, wide),
                xbuf[: c * h * w].view(c, h, w), [s[: h * w].view(h, w) for s in scratch],
                weight[: h * w].view(h, w))
        region = zsum[:, y0 : y1 + WIN - 1, x0 : x1 + WIN - 1]
        # along y (strided) a direct 7-term sum beats the running sum (and shifted adds);
        # along x the reverse. Each output is one thread's 7 additions in a fixed order,
        # whatever the thread count.
        plane = torch.sum(region.unfold(1, WIN, 1), -1, out=views.ysum)
        ssim_map = formula(views.box7(plane), views.scratch)
        # times the mask as 1.0 / 0.0 (the map is finite): converted from its bytes, which
        # is several times faster than multiplying by (or converting) the bool tensor
        ones = views.ones.copy_(inside[i, y0:y1, x0:x1].view(torch.uint8))
        total.add(ssim_map.mul_(ones))
        clock.lap(phase)
    return total.value(), count


# The formulas take 7x7x7 box *sums* S (not means u = S / N, N = 343) and the constants
# scaled to match. With V = Sxx - Sx^2 / N = (N - 1) v (v: the sample variance that the
# published code uses, cov = N / (N - 1)), every SSIM term is a ratio whose numerator and
# denominator are both multiplied by N^2 (luminance: 2 Sx Sy + C1 N^2 over
# Sx^2 + Sy^2 + C1 N^2) or by N - 1 (contrast, structure, SSIM's second factor), so the
# values are the published ones without dividing five planes by N. Each line below is one
# pass over the plane (addcmul / add with alpha fold a multiply into the pass), and the
# ratios are multiplied out so that a single division remains.
_N = WIN**3


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=like.dtype, device=like.device)


class SsimFormula:
    """SSIM map from the box sums [Sx, Sy, S(x^2 + y^2), Sxy] (a :data:`Formula`).

    ``weight`` None: scikit-image ``structural_similarity`` (uniform window, sample
    covariance), the 2023 profile. ``weight`` w: SynthRAD2025 ``structural_similarity_at_scale``,
    clip(l) ** w * clip(c) ** w * clip(s) ** w. With C3 = C2 / 2 the published contrast and
    structure terms multiply to c s = (2 sd + C2)(Vxy + C3) / ((Vx + Vy + C2)(sd + C3)) =
    (2 Vxy + C2) / (Vx + Vy + C2) whatever sd = sqrt(Vx) sqrt(Vy) is: the square roots
    cancel exactly, and clipping s at 0 is clipping 2 Vxy + C2 at 0 (l and c are positive:
    images >= 0, positive constants). Both profiles therefore need the same four box sums;
    (l c s) ** w equals l**w * c**w * s**w up to rounding. ``c1``/``c2``/``weight`` are
    also read by the fused CPU loop (:func:`evaluator.image_kernels.plane_map`), which
    performs the same operations.
    """

    def __init__(self, data_range: float, weight: float | None = None) -> None:
        self.c1 = (K1 * data_range) ** 2 * _N**2
        self.c2 = (K2 * data_range) ** 2 * (_N - 1)
        self.weight = weight
        self._consts: list[torch.Tensor] = []  # C1, C2 as tensors: made once, not per plane

    def __call__(self, u: torch.Tensor, scratch: list[torch.Tensor]) -> torch.Tensor:
        c1, c2, weight = self.c1, self.c2, self.weight
        sx, sy, sss, sxy = u.unbind(0)  # sss = sum(x^2 + y^2)
        a1, b1, a2 = scratch
        if not self._consts:
            self._consts.extend((_const(c1, u), _const(c2, u)))
        c1t, c2t = self._consts
        torch.addcmul(c1t, sx, sy, value=2, out=a1)  # 2 Sx Sy + C1
        torch.addcmul(c1t, sx, sx, out=b1).addcmul_(sy, sy)  # Sx^2 + Sy^2 + C1
        torch.addcmul(c2t, sx, sy, value=-2 / _N, out=a2).add_(sxy, alpha=2)  # 2 Vxy + C2
        sss.add_(b1, alpha=-1 / _N).add_(c2 + c1 / _N)  # Vx + Vy + C2
        if weight is not None:
            a2.clamp_(min=0)
        a1.mul_(a2)
        b1.mul_(sss)
        ratio = a1.div_(b1)
        return ratio if weight is None else _pow_(ratio, weight)


def _ssim_formula(data_range: float, weight: float | None = None) -> SsimFormula:
    return SsimFormula(data_range, weight)


def _pow_(t: torch.Tensor, w: float) -> torch.Tensor:
    """t ** w in place, for t >= 0.

    On the CPU in numpy, in place on the tensor's memory: single-threaded whatever torch's
    thread count (torch's split between vectorised and scalar code follows the thread count,
    and its pow differed in the last bit there) and about twice as fast as torch's.
    exp(w log v) is faster than pow (and log 0 = -inf gives 0 = 0 ** w).
    """
    if t.device.type != "cpu":
        return t.log_().mul_(w).exp_()
    a = t.numpy()
    with np.errstate(divide="ignore"):
        np.log(a, out=a)
    a *= w
    np.exp(a, out=a)
    return t


# ---------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------


def _psnr(sq_sum: float, n: int, spec: ProfileSpec) -> float:
    # skimage.metrics.peak_signal_noise_ratio on the clipped mask voxels
    mse = sq_sum / n
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(spec.data_range**2 / mse))


def _prepare_(t: torch.Tensor, outside: torch.Tensor, spec: ProfileSpec) -> torch.Tensor:
    """In place: clip to the profile range, outside-mask voxels to its minimum, shift to >= 0.

    Inside the mask x - y then equals clip(ct) - clip(sct), which is what PSNR needs.
    """
    return t.clamp_(spec.hu_min, spec.hu_max).masked_fill_(outside, spec.hu_min).sub_(spec.hu_min)


def _count(mask: torch.Tensor) -> int:
    if mask.device.type == "cpu":  # numpy's count is several times faster on bool views
        return int(np.count_nonzero(mask.numpy()))
    return int(torch.count_nonzero(mask))


def _scored_fill(
    ct: torch.Tensor, sct: torch.Tensor, inside: torch.Tensor, spec: ProfileSpec,
    scores: tuple[Total, Total], clock: PhaseClock, keep: torch.Tensor | None = None,
    down: torch.Tensor | None = None, zmap: list[tuple[int, bool]] | None = None,
) -> SliceFill:
    """Slice fill straight from the raw images, one slice at a time while it is in cache.

    Loads a slice (any dtype -> float64), adds |ct - sct| over the mask and, after preparing
    (clip, mask, shift), (x - y)^2 into ``scores`` (MAE, PSNR sums), optionally keeps the
    prepared slice in ``keep`` (2, z, y, x) or adds its 2x2x2 pair sums into ``down``
    (2, z', y', x'): MS-SSIM's next level, see :func:`_down2`; the caller scales it by 1/8.
    ``zmap[z]``: (slice of ``ct``/``sct``, scored) for slice ``z`` of ``inside`` (edge
    padding repeats a slice, which is prepared again but not scored twice). Returns the
    prepared (2, y, x) slice.
    """
    ny, nx = inside.shape[1:]

    def buf(name: str, *shape: int) -> torch.Tensor:
        return _buffer(f"fill.{name}", shape, inside.device)

    off_buf = torch.empty((ny, nx), dtype=torch.bool, device=inside.device)
    ones = buf("ones", ny, nx)  # the slice's mask as 1.0 / 0.0
    fast = inside.device.type == "cpu"
    mae, sq = scores
    diff = buf("diff", ny, nx)
    n_down = down.shape[1] if down is not None else 0
    half_x, quarter = buf("x2", 2, ny, (nx + 1) // 2), buf("xy2", 2, (ny + 1) // 2, (nx + 1) // 2)

    kernels = _kernels(inside.device)
    if kernels is not None:
        sq_buf = buf("sq", ny, nx).numpy()
        inside_np, (mz, my, mx) = c_base(inside)
        inside_u8 = inside_np.view(np.uint8)
        # numba reads these dtypes directly (others: torch converts them first)
        direct = ct.dtype in _DIRECT and sct.dtype in _DIRECT and (
            kernels.direct is None or {_dtype_name(ct), _dtype_name(sct)} <= kernels.direct)
        ct_np, ct_at = c_base(ct) if direct else (None, (0, 0, 0))
        sct_np, sct_at = c_base(sct) if direct else (None, (0, 0, 0))
        down_np, down_at = c_base(down) if down is not None else (None, (0, 0, 0, 0))

    def fill(z: int, out: torch.Tensor) -> torch.Tensor:
        xy = out if keep is None else keep[:, z]
        xs, ys = xy.unbind(0)
        src, scored = (z, True) if zmap is None else zmap[z]
        finite = False
        if kernels is not None and scored:
            # the fast path below as one loop (same operations per voxel)
            xs_np, ys_np = xs.numpy(), ys.numpy()
            if ct_np is None or sct_np is None:
                xs.copy_(ct[src])
                ys.copy_(sct[src])
            if ct_np is None or sct_np is None:
                xy_np = xy.numpy()
                ins: tuple[Any, ...] = (xy_np[0:1], xy_np[1:2], (0, 0, 0), (0, 0, 0))
            else:
                ins = (ct_np, sct_np, (ct_at[0] + src, *ct_at[1:]),
                       (sct_at[0] + src, *sct_at[1:]))
            kernels.score_slice(ins[0], ins[1], ins[2], ins[3], inside_u8, (mz + z, my, mx),
                                spec.hu_min, spec.hu_max, xs_np, ys_np, diff.numpy(), sq_buf)
            clock.lap("load")
            part = Total.part(diff)
            finite = math.isfinite(part)
            if finite:
                mae.add_part(part)
                clock.lap("mae")
                sq.add_part(float(np.add.reduce(sq_buf, axis=None)))
                clock.lap("psnr")
        if not finite:
            xs.copy_(ct[src])
            ys.copy_(sct[src])
            clock.lap("load")
        # Masking by multiplying with the mask as 1.0 / 0.0 (several times faster than
        # masked_fill) gives the same values wherever both slices are finite: checked by the
        # MAE sum (finite only if every |ct - sct| * mask is: inf * 0 is NaN). Otherwise,
        # and for a slice that is not scored, masked_fill.
        if fast and scored and kernels is None:
            ones.copy_(inside[z].view(torch.uint8))
            part = Total.part(torch.sub(xs, ys, out=diff).mul_(ones).abs_())
            finite = math.isfinite(part)
            if finite:
                mae.add_part(part)
                clock.lap("mae")
                xy.clamp_(spec.hu_min, spec.hu_max).sub_(spec.hu_min).mul_(ones)
                clock.lap("prepare")
        if not finite:
            off = torch.logical_not(inside[z], out=off_buf)
            if scored:
                # |ct - sct| over the mask: zero the difference outside (whatever it holds)
                mae.add(torch.sub(xs, ys, out=diff).masked_fill_(off, 0.0).abs_())
                clock.lap("mae")
            _prepare_(xy, off, spec)
            clock.lap("prepare")
        if scored and not (finite and kernels is not None):
            # prepared images are equal (0) outside the mask
            d = torch.sub(xs, ys, out=diff)
            sq.add(d.mul_(d))
            clock.lap("psnr")
        if down is not None and (k := (z + 1) // 2) < n_down:
            # down-sampled slice k pairs slices 2k - 1 and 2k (slice 0 alone), in the order
            # of _down2: x, then y, then z
            if kernels is not None and down_np is not None and xy.is_contiguous():
                kernels.down_slice(xy.numpy(), down_np, (down_at[1] + k, *down_at[2:]),
                                   not (z % 2 or z == 0))
                clock.lap("downsample")
                return xy
            _pair_sum(xy, 2, half_x)
            if z % 2 or z == 0:
                _pair_sum(half_x, 1, down[:, k])
            else:
                down[:, k].add_(_pair_sum(half_x, 1, quarter))
            clock.lap("downsample")
        return xy

    return fill


def _run_level(fill: SliceFill, mask: torch.Tensor, formula: Formula, clock: PhaseClock,
               phase: str) -> tuple[float, int]:
    """``_masked_map_sum``, but still calls ``fill`` on every slice when the volume is too
    small for the window (no map voxel: NaN (M)S-SSIM as published; MAE/PSNR still count)."""
    if min(mask.shape) < WIN:
        tmp = torch.empty((2, *mask.shape[1:]), dtype=torch.float64, device=mask.device)
        for z in range(mask.shape[0]):
            fill(z, tmp)
        return 0.0, 0
    return _masked_map_sum(fill, mask, formula, clock, phase)


def _profile_2023(
    ct: torch.Tensor, sct: torch.Tensor, mask: torch.Tensor, bbox: list[tuple[int, int]],
    device: torch.device, clock: PhaseClock,
) -> dict[str, float]:
    spec = PROFILE_SPECS["synthrad2023"]
    if min(ct.shape) < WIN:
        raise EvaluationInputError(
            f"image size {tuple(ct.shape[::-1])} is smaller than the {WIN}-voxel SSIM window"
        )
    # Outside the mask both images are the constant 0 after masking and shifting, so the
    # mask's bounding box plus the 3-voxel window radius gives exactly the same SSIM map
    # there; MAE and PSNR only look at mask voxels anyway.
    crop = tuple(
        slice(max(0, lo - PAD), min(n, hi + 1 + PAD))
        for (lo, hi), n in zip(bbox, ct.shape, strict=True)
    )
    m = _binary(mask[crop].to(device))
    n = _count(m)
    mae, sq = Total(device), Total(device)
    clock.lap("mask")
    fill = _scored_fill(ct[crop], sct[crop], m, spec, (mae, sq), clock)
    total, count = _run_level(fill, m, _ssim_formula(spec.data_range), clock, "ssim")
    return {"mae": mae.value() / n, "psnr": _psnr(sq.value(), n, spec),
            "ssim": total / count if count else float("nan")}


def _edge_pad_to(t: torch.Tensor, size: int) -> torch.Tensor:
    """Edge-pads the last three axes to at least ``size`` (half before, half after)."""
    pads: list[int] = []
    for n in reversed(t.shape[-3:]):  # F.pad wants the last axis first
        extra = max(0, size - n)
        pads += [extra // 2, extra - extra // 2]
    if not any(pads):
        return t
    t5 = t.reshape(1, -1, *t.shape[-3:])
    out = torch.nn.functional.pad(t5, pads, mode="replicate")
    return out.reshape(*t.shape[:-3], *out.shape[-3:])


def _pair_sum(t: torch.Tensor, dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """out[j] = t[2j-1] + t[2j] along ``dim``, with t[-1] = 0; length ceil(n / 2)."""
    n = t.shape[dim]
    m = (n + 1) // 2
    if out is None:
        shape = list(t.shape)
        shape[dim] = m
        out = torch.empty(shape, dtype=t.dtype, device=t.device)
    out.narrow(dim, 0, 1).copy_(t.narrow(dim, 0, 1))
    if m > 1:
        torch.add(t.narrow(dim, 1, 2 * m - 3)[(slice(None),) * dim + (slice(0, None, 2),)],
                  t.narrow(dim, 2, 2 * m - 3)[(slice(None),) * dim + (slice(0, None, 2),)],
                  out=out.narrow(dim, 1, m - 1))
    return out


def _down2(t: torch.Tensor) -> torch.Tensor:
    """``fftconvolve(t, ones((2, 2, 2)) / 8, mode="same")[::2, ::2, ::2]`` (last 3 axes).

    Output voxel j along an axis averages input voxels 2j-1 and 2j, with a zero before the
    first voxel (that is what ``mode="same"`` does with an even-sized kernel).
    """
    d = t.ndim
    return _pair_sum(_pair_sum(_pair_sum(t, d - 1), d - 2), d - 3).mul_(0.125)


@dataclass
class _Sparse:
    """Prepared images (x, y) that are 0 outside ``data`` (2, z, y, x), which sits at
    ``offset`` in ``shape`` (z, y, x)."""

    data: torch.Tensor
    offset: tuple[int, ...]
    shape: tuple[int, ...]

    def region(self, box: tuple[slice, ...]) -> torch.Tensor:
        """The image over ``box`` (a view when ``box`` lies inside ``data``)."""
        inner = []
        pads: list[int] = []
        for sl, off, n in zip(box, self.offset, self.data.shape[1:], strict=True):
            lo, hi = sl.start - off, sl.stop - off
            inner.append(slice(max(0, lo), min(n, hi)))
            pads = [max(0, -lo), max(0, hi - n), *pads]  # F.pad order: last axis first
        view = self.data[(slice(None), *inner)]
        if not any(pads):
            return view
        return torch.nn.functional.pad(view, pads)

    def down2(self) -> _Sparse:
        """The next MS-SSIM level: ``_down2`` of the whole (implicit) image."""
        pads: list[int] = []
        starts = []
        for off, n, full in zip(self.offset, self.data.shape[1:], self.shape, strict=True):
            front = off % 2  # start on an even index so the pairs line up with the image's
            # an odd last index pairs with the (zero) voxel after the data, if the image has it
            back = 1 if (off + n - 1) % 2 == 1 and off + n < full else 0
            pads = [front, back, *pads]
            starts.append((off - front) // 2)
        data = torch.nn.functional.pad(self.data, pads) if any(pads) else self.data
        shape = tuple((n + 1) // 2 for n in self.shape)
        down = _down2(data)
        keep = tuple(slice(0, min(k, full - st))
                     for k, full, st in zip(down.shape[1:], shape, starts, strict=True))
        return _Sparse(down[(slice(None), *keep)], tuple(starts), shape)


def _pair_aligned_box(lo: int, hi: int, n: int) -> slice:
    """[lo - 3, hi + 3] grown so that down-sampling needs no padding: even start, and an
    odd length unless it ends at the image border (pairs are (2j-1, 2j))."""
    start = max(0, lo - PAD)
    start -= start % 2
    stop = min(n, hi + 1 + PAD)
    if stop < n and (stop - start) % 2 == 0:
        stop += 1
    return slice(start, stop)


def _aligned(start: int, stop: int, n: int) -> slice:
    """[start, stop) grown to an even start and an odd length unless it ends at n."""
    start -= start % 2
    if stop < n and (stop - start) % 2 == 0:
        stop += 1
    return slice(start, stop)


def _level_box(bbox: list[tuple[int, int]] | None, shape: tuple[int, ...] | torch.Size,
               step: int) -> tuple[slice, ...] | None:
    """A box around the level's mask ``mask[::step, ::step, ::step]`` (of ``shape``) plus
    the window radius, clipped to the image, from the full mask's bounding box: it contains
    the level's own box, which is all an exact result needs (the map is summed over mask
    voxels only and outside the mask both images are 0). None: no mask voxel at this level.
    """
    if bbox is None:
        return None
    box = []
    for (lo, hi), n in zip(bbox, shape, strict=True):
        first, last = -(-lo // step), hi // step
        if first > last:
            return None
        box.append(slice(max(0, first - PAD), min(n, last + 1 + PAD)))
    return tuple(box)


def _edge_index(n: int, size: int) -> tuple[int, list[int]]:
    """Edge padding of one axis of length ``n`` to ``size`` as in :func:`_edge_pad_to`:
    the padding before, and the source index of every padded position."""
    before = max(0, size - n) // 2
    total = max(n, size)
    return before, [min(max(p - before, 0), n - 1) for p in range(total)]


def _profile_2025(
    ct: torch.Tensor, sct: torch.Tensor, mask: torch.Tensor, bbox: list[tuple[int, int]],
    device: torch.device, clock: PhaseClock,
) -> dict[str, float]:
    """MAE, PSNR and masked MS-SSIM (SynthRAD2025).

    Prepared images are 0 outside the mask at every level (down-sampling zeros gives zeros),
    so each level keeps only a box around its data (:class:`_Sparse`) and evaluates the map
    on the mask's box plus the window radius: the same numbers as the full-volume code.
    """
    spec = PROFILE_SPECS["synthrad2025"]
    scores = (Total(device), Total(device))  # |ct - sct|, (x - y)^2 over the mask
    first: SliceFill | None = None
    nz = ct.shape[0]
    if min(ct.shape[1:]) < MS_SSIM_MIN_SIZE:
        # Small slices: score and prepare the image whole, then edge-pad as published.
        box0 = tuple(_pair_aligned_box(lo, hi, n)
                     for (lo, hi), n in zip(bbox, ct.shape, strict=True))
        m = _binary(mask[box0].to(device))
        n = _count(m)
        clock.lap("mask")
        xy = torch.stack([_load(ct, box0, device), _load(sct, box0, device)])
        score = _scored_fill(xy[0], xy[1], m, spec, scores, clock, keep=xy)
        for z in range(xy.shape[1]):
            score(z, xy[:, z])
        full = torch.zeros((2, *ct.shape), dtype=torch.float64, device=device)
        full[(slice(None), *box0)] = xy
        full = _edge_pad_to(full, MS_SSIM_MIN_SIZE)
        m_full = _edge_pad_to(_binary(mask).to(device=device, dtype=torch.float64),
                              MS_SSIM_MIN_SIZE) > 0
        bbox_full = _bbox(m_full)
        shape_full = tuple(m_full.shape)

        def level_mask(step: int, box: tuple[slice, ...]) -> torch.Tensor:
            return m_full[::step, ::step, ::step][box]
        images = _Sparse(full, (0, 0, 0), tuple(full.shape[1:]))
        clock.lap("prepare")
    else:
        # Level 0 is loaded, scored and prepared slice by slice by the first map pass,
        # which also down-samples it into level 1 (box0 is pair-aligned: no padding needed).
        # Fewer than 97 slices (common: 96 x 384 x 384) are edge-padded along z on the fly
        # (zmap): a repeated slice is prepared again but not scored.
        # Level 1 is held on a box that also covers the level-1 map's box (no padding
        # copy) and is pair-aligned in turn (level 2 needs none either); the part that
        # level 0 does not write is zero.
        before, zsrc = _edge_index(nz, MS_SSIM_MIN_SIZE)
        (zlo, zhi), pz = bbox[0], len(zsrc)
        # an edge slice of the mask repeats into the padding
        bbox_full = [(0 if zlo == 0 else zlo + before, pz - 1 if zhi == nz - 1 else zhi + before),
                     *bbox[1:]]
        shape0 = (pz, *ct.shape[1:])
        box0 = tuple(_pair_aligned_box(lo, hi, n)
                     for (lo, hi), n in zip(bbox_full, shape0, strict=True))
        zs = zsrc[box0[0]]
        src = (slice(zs[0], zs[-1] + 1), *box0[1:])  # the source slices (a view)
        m = _binary(mask[src].to(device))
        n = _count(m)
        if pz > nz:
            m = m.index_select(0, torch.tensor(zs, device=device) - zs[0])
        zmap = [(s - zs[0], 0 <= z - before < nz) for z, s in zip(range(pz)[box0[0]], zs,
                                                                    strict=True)]
        shape1 = tuple((n + 1) // 2 for n in shape0)
        inner = [slice(sl.start // 2, sl.start // 2 + (sl.stop - sl.start + 1) // 2)
                 for sl in box0]
        box1 = _level_box(bbox_full, shape1, 2) or tuple(inner)
        held = [_aligned(min(a.start, b.start), max(a.stop, b.stop), n)
                for a, b, n in zip(inner, box1, shape1, strict=True)]
        level1 = torch.empty((2, *(sl.stop - sl.start for sl in held)), dtype=torch.float64,
                             device=device)
        interior = level1[(slice(None), *(slice(a.start - h.start, a.stop - h.start)
                                          for a, h in zip(inner, held, strict=True)))]
        for axis, (a, h) in enumerate(zip(inner, held, strict=True), start=1):
            level1.narrow(axis, 0, a.start - h.start).zero_()
            level1.narrow(axis, a.stop - h.start, h.stop - a.stop).zero_()
        first = _scored_fill(ct[src], sct[src], m, spec, scores, clock, down=interior,
                             zmap=zmap)
        images = _Sparse(level1, tuple(sl.start for sl in held), shape1)
        shape_full = shape0

        def level_mask(step: int, box: tuple[slice, ...]) -> torch.Tensor:
            # the padded mask's [::step, ::step, ::step][box], from the unpadded one
            rows = torch.tensor([zsrc[j * step] for j in range(box[0].start, box[0].stop)],
                                device=mask.device)
            return mask[:, ::step, ::step][(slice(None), *box[1:])].index_select(0, rows)

        clock.lap("mask")
    levels = len(MS_SSIM_WEIGHTS)
    product = 1.0
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        formula = _ssim_formula(spec.data_range, weight)
        step = 2**level
        level_shape = tuple((n - 1) // step + 1 for n in shape_full)
        if level == 0 and first is not None:
            total, count = _run_level(first, m, formula, clock, "ms_ssim")  # m: box0
        elif (box_l := _level_box(bbox_full, level_shape, step)) is None:
            total, count = 0.0, 0
        else:
            fill = _product_fill(images.region(box_l))
            m_level = _binary(level_mask(step, box_l).to(device))
            total, count = _run_level(fill, m_level, formula, clock, "ms_ssim")
        value = total / count if count else float("nan")
        product *= min(max(value, 0.0), 1.0) if value == value else value
        if level == 0 and first is not None:
            interior.mul_(0.125)  # level 1, summed during the level-0 pass
        elif level < levels - 1:
            images = images.down2()
        clock.lap("downsample")
    # outside-mask voxels are -1024 in both images: no effect on MAE
    return {"mae": scores[0].value() / n, "psnr": _psnr(scores[1].value(), n, spec),
            "ms_ssim": product}


def compute_image_metrics(
    ct: ArrayLike,
    sct: ArrayLike,
    mask: ArrayLike,
    profile: str = "synthrad2023",
    device: str | torch.device = "cpu",
    threads: int | None = 1,
    timings: dict[str, float] | None = None,
    fused: bool | Literal["compiled", "jit"] = True,
) -> dict[str, float]:
    """Image metrics of a synthetic CT against its CT inside a body mask.

    ``ct``/``sct``/``mask``: arrays (any order, but the same for all three), tensors or
    Volumes; the mask is binarised as ``mask > 0``. Returns ``{"mae", "psnr", "ssim"}`` for
    ``synthrad2023`` and ``{"mae", "psnr", "ms_ssim"}`` for ``synthrad2025``. A mask whose
    voxels all lie within 3 voxels of the border gives a NaN (M)S-SSIM, as the published
    code does; a perfect prediction gives ``psnr = inf``.

    On the CPU the values are bit-identical across runs and across torch thread counts: sums
    run in a fixed order (:class:`evaluator.reductions.Total`) and the transcendental
    functions in numpy; everything else is element-wise IEEE arithmetic.

    ``threads``: torch CPU threads during the call (restored afterwards; None leaves torch's
    setting). The default 1 is deliberate: the per-plane operations are too small to gain
    from intra-op threads, and on a busy machine threads waiting for each other made the
    computation over 10x slower. Run cases in parallel processes instead.

    ``timings``: if given, wall-clock seconds are added to it per phase ("mask", "load",
    "mae", "prepare", "psnr", "ssim" or "ms_ssim", "downsample"); CPU only. With the fused
    loops "load" also holds the per-voxel MAE, clipping and PSNR arithmetic ("mae" and
    "psnr" are then their sums).

    ``fused``: on the CPU, use the fused loops of :mod:`evaluator.image_kernels` (same
    bits, about twice as fast): True, the ahead-of-time build
    (:mod:`evaluator.image_kernels_aot`) where there is one, else numba's JIT when
    installed; ``"compiled"`` only the former (numba's start-up in a fresh process, ~0.8 CPU
    s, exceeds what it saves on one case: a one-shot command passes this); ``"jit"`` only
    the latter; False torch's passes.
    """
    if profile not in PROFILE_SPECS:
        raise EvaluationInputError(
            f"unknown profile {profile!r} (expected one of {', '.join(PROFILES)})"
        )
    clock = PhaseClock(timings)
    dev = torch.device(device)
    ct_t, sct_t, mask_t = _raw(ct), _raw(sct), _raw(mask)
    if ct_t.ndim != 3 or ct_t.shape != sct_t.shape or ct_t.shape != mask_t.shape:
        raise EvaluationInputError(
            f"CT, sCT and mask must be 3-D arrays of one shape, got {tuple(ct_t.shape)}, "
            f"{tuple(sct_t.shape)} and {tuple(mask_t.shape)}"
        )
    before = torch.get_num_threads()
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    token = _FUSED.set(fused)
    try:
        return _compute(ct_t, sct_t, mask_t, profile, dev, clock)
    finally:
        _FUSED.reset(token)
        torch.set_num_threads(before)


def _compute(ct_t: torch.Tensor, sct_t: torch.Tensor, mask_t: torch.Tensor, profile: str,
             dev: torch.device, clock: PhaseClock) -> dict[str, float]:
    with torch.no_grad():
        # unsigned masks are binarised only where the profiles look (inside the box)
        unsigned = mask_t.dtype in (torch.bool, torch.uint8)
        mask_b = mask_t if unsigned else mask_t > 0
        bbox = _bbox(mask_b)
        if bbox is None:
            raise EvaluationInputError("mask is empty (no voxel > 0)")
        if profile == "synthrad2023":
            return _profile_2023(ct_t, sct_t, mask_b, bbox, dev, clock)
        return _profile_2025(ct_t, sct_t, mask_b, bbox, dev, clock)
