"""Fused CPU loops of the SSIM map passes (numba), bit-identical to the torch operations.

:mod:`evaluator.image_metrics` computes each map plane with ~25 torch passes over memory
(running 7-slice sums, box sums along y and x, the SSIM formula, the mask). Here the same
per-voxel arithmetic runs as one loop nest per plane while the data is in cache. Every
voxel sees exactly the operations torch performs, in the same order, with the same
rounding: torch's CPU ``addcmul(s, a, b, value=v)`` is ``fma(v * a, b, s)`` and
``add(s, b, alpha=k)`` is ``fma(b, k, s)`` (both measured, vector and scalar paths), so
those are fused multiply-adds here too (LLVM's ``llvm.fma``); everything else is one IEEE
operation per step. No fast-math flags: LLVM may vectorise but not reorder. Sums over
whole planes stay with numpy (:class:`evaluator.reductions.Total`).

Optional: without numba ``KERNELS`` is None and the torch passes run (same bits, slower).
Compiled code is cached next to this file (``cache=True``), so a process loads it instead of
compiling (~seconds) where that folder is writable.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

_N = 343  # 7 x 7 x 7 voxels per window


def _build() -> SimpleNamespace | None:
    try:
        from llvmlite import ir
        from numba import njit, types
        from numba.extending import intrinsic
    except ImportError:
        return None

    @intrinsic
    def fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:  # noqa: ARG001
        sig = types.float64(types.float64, types.float64, types.float64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:  # noqa: ARG001
            f64 = ir.DoubleType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f64],
                                                  ir.FunctionType(f64, [f64, f64, f64]))
            return builder.call(fn, args)

        return sig, codegen

    jit = njit(cache=True, nogil=True, error_model="numpy")

    @jit
    def zsum_add(zsum: Any, x: Any, y: Any) -> None:  # pragma: no cover - compiled
        # first2.add_(s, alpha=1); sss.addcmul_(x, x).addcmul_(y, y); sxy.addcmul_(x, y)
        ny, nx = x.shape
        for i in range(ny):
            for j in range(nx):
                a, b = x[i, j], y[i, j]
                zsum[0, i, j] = zsum[0, i, j] + a
                zsum[1, i, j] = zsum[1, i, j] + b
                zsum[2, i, j] = fma(b, b, fma(a, a, zsum[2, i, j]))
                zsum[3, i, j] = fma(a, b, zsum[3, i, j])

    @jit
    def zsum_slide(zsum: Any, xo: Any, yo: Any, xn: Any, yn: Any) -> None:  # pragma: no cover
        # the old slice subtracted (value / alpha -1), then the new one added, sum by sum
        ny, nx = xo.shape
        for i in range(ny):
            for j in range(nx):
                a, b, c, d = xo[i, j], yo[i, j], xn[i, j], yn[i, j]
                zsum[0, i, j] = (zsum[0, i, j] - a) + c
                zsum[1, i, j] = (zsum[1, i, j] - b) + d
                zsum[2, i, j] = fma(d, d, fma(c, c, fma(-b, b, fma(-a, a, zsum[2, i, j]))))
                zsum[3, i, j] = fma(c, d, fma(-a, b, zsum[3, i, j]))

    @jit
    def plane_map(zsum: Any, y0: int, y1: int, x0: int, x1: int, inside: Any, c1: float,
                  c2: float, clamp: bool, masked: bool, out: Any, row: Any,
                  box: Any) -> None:  # pragma: no cover - compiled
        """The map over the plane rectangle [y0, y1) x [x0, x1) from the running 7-slice
        sums ``zsum`` (4, ny, nx), as ``image_metrics._masked_map_sum`` computes it with
        torch: the 7-term sum along y (``torch.sum`` over ``unfold``: in order, except for
        the last (n mod 16) outputs of each row of its loop, which it adds as
        a0 + a4 + a5 + a6 + a1 + a2 + a3; a row is the whole channel when the rectangle
        spans the full width, else one image row), ``torch.cumsum`` along x and the
        7-voxel differences, then the formula of ``image_metrics.SsimFormula`` (clamp: the
        MS-SSIM clip of 2 Vxy + C2 at 0), times the mask ``inside`` (h, w; 1 / 0) when
        ``masked``, into ``out`` (h, w). ``row`` (4, w + 6), ``box`` (4, w): scratch.
        (Gathering the 7 rows per voxel measured faster than whole-row passes here.)"""
        h, w = y1 - y0, x1 - x0
        wide = w + 6
        full = wide == zsum.shape[2]
        n_loop = h * wide if full else wide
        tail_from = n_loop - n_loop % 16
        c3 = c2 + c1 / _N
        k2 = -2 / _N
        k1 = -1 / _N
        for i in range(h):
            start = i * wide if full else 0
            yy = y0 + i
            for ch in range(4):
                acc = 0.0
                for j in range(wide):
                    xx = x0 + j
                    a0 = zsum[ch, yy, xx]
                    a1 = zsum[ch, yy + 1, xx]
                    a2 = zsum[ch, yy + 2, xx]
                    a3 = zsum[ch, yy + 3, xx]
                    a4 = zsum[ch, yy + 4, xx]
                    a5 = zsum[ch, yy + 5, xx]
                    a6 = zsum[ch, yy + 6, xx]
                    if start + j >= tail_from:
                        t = (((((a0 + a4) + a5) + a6) + a1) + a2) + a3
                    else:
                        t = (((((a0 + a1) + a2) + a3) + a4) + a5) + a6
                    acc = acc + t
                    row[ch, j] = acc
                box[ch, 0] = row[ch, 6]
                for j in range(1, w):
                    box[ch, j] = row[ch, j + 6] - row[ch, j - 1]
            for j in range(w):
                sx, sy, sss, sxy = box[0, j], box[1, j], box[2, j], box[3, j]
                a1 = fma(2.0 * sx, sy, c1)
                b1 = fma(sy, sy, fma(sx, sx, c1))
                a2 = fma(sxy, 2.0, fma(k2 * sx, sy, c2))
                v = fma(b1, k1, sss) + c3
                if clamp and a2 < 0.0:
                    a2 = 0.0
                r = (a1 * a2) / (b1 * v)
                out[i, j] = r * inside[i, j] if masked else r

    @jit
    def score_slice(ct: Any, sct: Any, inside: Any, lo: float, hi: float, xs: Any, ys: Any,
                    diff: Any, sq: Any) -> None:  # pragma: no cover - compiled
        """One slice of ``image_metrics._scored_fill`` (its fast path) in one loop: loads
        ``ct``/``sct`` as float64; ``diff`` = |(x - y) * m| (MAE terms); the prepared
        slices ``xs``/``ys`` = (clamp(v, lo, hi) - lo) * m; ``sq`` = (xs - ys)^2 (PSNR
        terms); m: the mask as 1 / 0. Valid where the slices are finite (the caller checks
        the MAE sum and otherwise starts again from the raw slices)."""
        ny, nx = inside.shape
        for i in range(ny):
            for j in range(nx):
                x = np.float64(ct[i, j])
                y = np.float64(sct[i, j])
                m = np.float64(inside[i, j])
                diff[i, j] = abs((x - y) * m)
                x = lo if x < lo else x
                x = hi if x > hi else x
                y = lo if y < lo else y
                y = hi if y > hi else y
                x = (x - lo) * m
                y = (y - lo) * m
                xs[i, j] = x
                ys[i, j] = y
                d = x - y
                sq[i, j] = d * d

    @jit
    def mask_mul(out: Any, inside: Any) -> None:  # pragma: no cover - compiled
        h, w = out.shape
        for i in range(h):
            for j in range(w):
                out[i, j] = out[i, j] * inside[i, j]

    return SimpleNamespace(zsum_add=zsum_add, zsum_slide=zsum_slide, plane_map=plane_map,
                           mask_mul=mask_mul, score_slice=score_slice)


KERNELS = _build()
