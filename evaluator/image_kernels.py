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
compiling (~seconds) where that folder is writable; :mod:`evaluator.image_kernels_aot` builds
the same loops ahead of time into an extension that loads without numba.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

_N = 343  # 7 x 7 x 7 voxels per window

try:
    from llvmlite import ir
    from numba import njit, types, uint64
    from numba.extending import intrinsic
except ImportError:  # optional: the torch passes run instead
    _HAVE_NUMBA = False
else:
    _HAVE_NUMBA = True

# Kernels are module-level functions: numba caches those on disk, not closures.
if _HAVE_NUMBA:
    def _fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
        """fma(a, b, c) = a * b + c rounded once (LLVM's intrinsic: one instruction on
        CPUs with FMA, a correctly rounded library call elsewhere)."""
        sig = types.float64(types.float64, types.float64, types.float64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            f64 = ir.DoubleType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f64],
                                                  ir.FunctionType(f64, [f64, f64, f64]))
            return builder.call(fn, args)

        return sig, codegen

    fma: Any = intrinsic(_fma)
    jit = njit(cache=True, nogil=True, error_model="numpy")
    # Indices are unsigned: numba then skips its negative-index wraparound, which otherwise
    # keeps LLVM from vectorising these loops (measured 4x on the y sums).
    u = uint64

    @jit
    def zsum_add(zsum: Any, x: Any, y: Any) -> None:  # pragma: no cover - compiled
        # first2.add_(s, alpha=1); sss.addcmul_(x, x).addcmul_(y, y); sxy.addcmul_(x, y)
        ny, nx = x.shape
        for i in range(u(ny)):
            for j in range(u(nx)):
                a, b = x[i, j], y[i, j]
                zsum[u(0), i, j] = zsum[u(0), i, j] + a
                zsum[u(1), i, j] = zsum[u(1), i, j] + b
                zsum[u(2), i, j] = fma(b, b, fma(a, a, zsum[u(2), i, j]))
                zsum[u(3), i, j] = fma(a, b, zsum[u(3), i, j])

    @jit
    def zsum_slide(zsum: Any, xo: Any, yo: Any, xn: Any, yn: Any) -> None:  # pragma: no cover
        # the old slice subtracted (value / alpha -1), then the new one added, sum by sum
        ny, nx = xo.shape
        for i in range(u(ny)):
            for j in range(u(nx)):
                a, b, c, d = xo[i, j], yo[i, j], xn[i, j], yn[i, j]
                zsum[u(0), i, j] = (zsum[u(0), i, j] - a) + c
                zsum[u(1), i, j] = (zsum[u(1), i, j] - b) + d
                zsum[u(2), i, j] = fma(d, d, fma(c, c, fma(-b, b, fma(-a, a, zsum[u(2), i, j]))))
                zsum[u(3), i, j] = fma(c, d, fma(-a, b, zsum[u(3), i, j]))

    @jit
    def plane_map(zsum: Any, y0: int, y1: int, x0: int, x1: int, inside: Any, m_at: Any,
                  c1: float, c2: float, clamp: bool, masked: bool, out: Any,
                  row: Any) -> None:  # pragma: no cover - compiled
        """The map over the plane rectangle [y0, y1) x [x0, x1) from the running 7-slice
        sums ``zsum`` (4, ny, nx), as ``image_metrics._masked_map_sum`` computes it with
        torch: the 7-term sum along y (``torch.sum`` over ``unfold``: in order, except for
        the last (n mod 16) outputs of each row of its loop, which it adds as
        a0 + a4 + a5 + a6 + a1 + a2 + a3; a row is the whole channel when the rectangle
        spans the full width, else one image row), ``torch.cumsum`` along x (from 0.0) and
        the 7-voxel differences, then the formula of ``image_metrics.SsimFormula`` (clamp:
        the MS-SSIM clip of 2 Vxy + C2 at 0), times the mask (``inside`` from index
        ``m_at``, (h, w), 1 / 0) when ``masked``, into ``out`` (h, w). ``row`` (4, w + 7):
        scratch."""
        h, w = y1 - y0, x1 - x0
        mz, my, mx = u(m_at[0]), u(m_at[1]), u(m_at[2])
        wide = w + 6
        full = wide == zsum.shape[2]
        n_loop = h * wide if full else wide
        tail_from = n_loop - n_loop % 16
        c3 = c2 + c1 / _N
        k2 = -2 / _N
        k1 = -1 / _N
        for i in range(u(h)):
            yy = u(y0) + i
            # first x index of the row in torch's tail
            split = u(min(max(tail_from - (np.int64(i) * wide if full else 0), 0), wide))
            for ch in range(u(4)):
                z0, z1, z2 = zsum[ch, yy], zsum[ch, yy + u(1)], zsum[ch, yy + u(2)]
                z3, z4 = zsum[ch, yy + u(3)], zsum[ch, yy + u(4)]
                z5, z6 = zsum[ch, yy + u(5)], zsum[ch, yy + u(6)]
                r = row[ch]
                r[u(0)] = 0.0  # r[j + 1]: the cumulative sum up to x = j
                for j in range(split):
                    xx = u(x0) + j
                    t = (((z0[xx] + z1[xx]) + z2[xx]) + z3[xx]) + z4[xx]
                    r[j + u(1)] = (t + z5[xx]) + z6[xx]
                for j in range(split, u(wide)):
                    xx = u(x0) + j
                    t = (((z0[xx] + z4[xx]) + z5[xx]) + z6[xx]) + z1[xx]
                    r[j + u(1)] = (t + z2[xx]) + z3[xx]
            # torch.cumsum: four independent running sums side by side
            s0 = s1 = s2 = s3 = 0.0
            for j in range(u(1), u(wide + 1)):
                s0 = s0 + row[u(0), j]
                row[u(0), j] = s0
                s1 = s1 + row[u(1), j]
                row[u(1), j] = s1
                s2 = s2 + row[u(2), j]
                row[u(2), j] = s2
                s3 = s3 + row[u(3), j]
                row[u(3), j] = s3
            rx, ry, rs, rxy = row[u(0)], row[u(1)], row[u(2)], row[u(3)]
            o = out[i]
            m = inside[mz, my + i]
            for j in range(u(w)):
                # the 7-voxel box: c[j + 6] - c[j - 1] (c[6] itself at j = 0: minus 0.0)
                sx = rx[j + u(7)] - rx[j]
                sy = ry[j + u(7)] - ry[j]
                sss = rs[j + u(7)] - rs[j]
                sxy = rxy[j + u(7)] - rxy[j]
                a1 = fma(2.0 * sx, sy, c1)
                b1 = fma(sy, sy, fma(sx, sx, c1))
                a2 = fma(sxy, 2.0, fma(k2 * sx, sy, c2))
                v = fma(b1, k1, sss) + c3
                if clamp:
                    a2 = max(a2, 0.0)
                q = (a1 * a2) / (b1 * v)
                o[j] = q * m[mx + j] if masked else q

    @jit
    def score_slice(ct: Any, sct: Any, ct_at: Any, sct_at: Any, inside: Any, m_at: Any,
                    lo: float, hi: float, xs: Any, ys: Any, diff: Any,
                    sq: Any) -> None:  # pragma: no cover - compiled
        """One slice of ``image_metrics._scored_fill`` (its fast path) in one loop: loads
        the (ny, nx) slices of ``ct``/``sct`` at ``ct_at``/``sct_at`` = (z, y, x) as
        float64; ``diff`` = |(x - y) * m| (MAE terms); the prepared slices ``xs``/``ys`` =
        (clamp(v, lo, hi) - lo) * m; ``sq`` = (xs - ys)^2 (PSNR terms); m: the mask
        ``inside`` at ``m_at`` as 1 / 0. Valid where the slices are finite (the caller
        checks the MAE sum and otherwise starts again from the raw slices). Whole arrays
        and an index rather than views: rows of C-contiguous arrays vectorise."""
        ny, nx = xs.shape
        for i in range(u(ny)):
            crow = ct[u(ct_at[0]), u(ct_at[1]) + i]
            srow = sct[u(sct_at[0]), u(sct_at[1]) + i]
            mrow = inside[u(m_at[0]), u(m_at[1]) + i]
            cx, sx, mx = u(ct_at[2]), u(sct_at[2]), u(m_at[2])
            xr, yr, dr, qr = xs[i], ys[i], diff[i], sq[i]
            for j in range(u(nx)):
                # np.float64, not float(): numba keeps float32 for float() of a float32
                x: float = np.float64(crow[cx + j])
                y: float = np.float64(srow[sx + j])
                m: float = np.float64(mrow[mx + j])
                dr[j] = abs((x - y) * m)
                x = lo if x < lo else x
                x = hi if x > hi else x
                y = lo if y < lo else y
                y = hi if y > hi else y
                x = (x - lo) * m
                y = (y - lo) * m
                xr[j] = x
                yr[j] = y
                d = x - y
                qr[j] = d * d

    @jit
    def down_slice(xy: Any, dst: Any, at: Any, add: bool) -> None:  # pragma: no cover
        """``image_metrics._pair_sum`` of the prepared slice ``xy`` (2, ny, nx) along x,
        then along y (pairs (2j - 1, 2j), the first voxel alone), written into ``dst``
        (2, Z, Y, X) from index ``at`` = (z, y, x), or added to what is there (``add``:
        the second slice of a z pair)."""
        ny, nx = xy.shape[1], xy.shape[2]
        my, mx = (ny + 1) // 2, (nx + 1) // 2
        z, y0, x0 = u(at[0]), u(at[1]), u(at[2])
        for c in range(u(2)):
            for a in range(u(my)):
                d = dst[c, z, y0 + a]
                r1 = xy[c, u(2) * a]
                if a == 0:
                    v = r1[u(0)]
                    d[x0] = d[x0] + v if add else v
                    for b in range(u(1), u(mx)):
                        v = r1[u(2) * b - u(1)] + r1[u(2) * b]
                        d[x0 + b] = d[x0 + b] + v if add else v
                else:
                    r0 = xy[c, u(2) * a - u(1)]
                    v = r0[u(0)] + r1[u(0)]
                    d[x0] = d[x0] + v if add else v
                    for b in range(u(1), u(mx)):
                        v = (r0[u(2) * b - u(1)] + r0[u(2) * b]) + (r1[u(2) * b - u(1)]
                                                                   + r1[u(2) * b])
                        d[x0 + b] = d[x0 + b] + v if add else v

    @jit
    def mask_mul(out: Any, inside: Any, m_at: Any) -> None:  # pragma: no cover - compiled
        h, w = out.shape
        mz, my, mx = u(m_at[0]), u(m_at[1]), u(m_at[2])
        for i in range(u(h)):
            o, m = out[i], inside[mz, my + i]
            for j in range(u(w)):
                o[j] = o[j] * m[mx + j]

    KERNELS: SimpleNamespace | None = SimpleNamespace(
        zsum_add=zsum_add, zsum_slide=zsum_slide, plane_map=plane_map, mask_mul=mask_mul,
        score_slice=score_slice, down_slice=down_slice, direct=None, compiled=False)
else:
    KERNELS = None


