"""Slow numpy/scipy/scikit-image reference implementations of the SynthRAD image metrics.

Written straight from the published definitions (SynthRAD2023/metrics and
SynthRAD2025/evaluation ``image_metrics.py``), without any of the speed tricks of
:mod:`evaluator.image_metrics`. Used by the tests and by ``benchmarks/image_metrics.py``
as the independent reference. Needs scikit-image (a dev dependency).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve

Array = np.ndarray[Any, Any]


def _crop3(a: Array) -> Array:
    return a[3:-3, 3:-3, 3:-3]


def _skimage_metrics() -> Any:
    import skimage.metrics

    return skimage.metrics


def reference_2023(ct: Array, sct: Array, mask: Array) -> dict[str, float]:
    sk = _skimage_metrics()
    peak_signal_noise_ratio = sk.peak_signal_noise_ratio
    structural_similarity = sk.structural_similarity

    gt = np.asarray(ct, dtype=np.float64)
    pred = np.asarray(sct, dtype=np.float64)
    m = np.asarray(mask) > 0
    mae = float(np.sum(np.abs(gt * m - pred * m)) / m.sum())
    lo, hi = -1024.0, 3000.0
    psnr = float(
        peak_signal_noise_ratio(
            np.clip(gt, lo, hi)[m], np.clip(pred, lo, hi)[m], data_range=hi - lo
        )
    )
    g = np.where(m, np.clip(gt, lo, hi), lo) - lo
    p = np.where(m, np.clip(pred, lo, hi), lo) - lo
    _, smap = structural_similarity(g, p, data_range=hi - lo, full=True)
    ssim = float(_crop3(smap)[_crop3(m)].mean(dtype=np.float64))
    return {"mae": mae, "psnr": psnr, "ssim": ssim}


def _ssim_at_scale(x: Array, y: Array, weight: float, data_range: float) -> Array:
    win = 7
    cov_norm = win**3 / (win**3 - 1)
    ux, uy = uniform_filter(x, win), uniform_filter(y, win)
    uxx, uyy, uxy = uniform_filter(x * x, win), uniform_filter(y * y, win), uniform_filter(
        x * y, win
    )
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    sx, sy = np.clip(vx, 0, None) ** 0.5, np.clip(vy, 0, None) ** 0.5
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    c3 = c2 / 2
    lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
    con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
    st = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
    result: Array = (lum**weight) * (con**weight) * (st**weight)
    return result


def reference_2025(ct: Array, sct: Array, mask: Array) -> dict[str, float]:
    peak_signal_noise_ratio = _skimage_metrics().peak_signal_noise_ratio

    m = (np.asarray(mask) > 0).astype(np.float64)
    lo, hi = -1024.0, 3071.0
    gt = np.where(m == 0, lo, np.asarray(ct, dtype=np.float64))
    pred = np.where(m == 0, lo, np.asarray(sct, dtype=np.float64))
    mae = float(np.sum(np.abs(gt * m - pred * m)) / m.sum())
    sel = m == 1
    psnr = float(
        peak_signal_noise_ratio(
            np.clip(gt, lo, hi)[sel], np.clip(pred, lo, hi)[sel], data_range=hi - lo
        )
    )
    g = np.where(m == 0, lo, np.clip(gt, lo, hi)) - lo
    p = np.where(m == 0, lo, np.clip(pred, lo, hi)) - lo
    pads = [(max(0, 97 - n) // 2, max(0, 97 - n) - max(0, 97 - n) // 2) for n in g.shape]
    g, p, mk = (np.pad(a, pads, mode="edge") for a in (g, p, m))
    kernel = np.ones((2, 2, 2)) / 8
    values = []
    for weight in (0.0448, 0.2856, 0.3001, 0.2363, 0.1333):
        smap = _ssim_at_scale(g, p, weight, hi - lo)
        values.append(float(_crop3(smap)[_crop3(mk).astype(bool)].mean(dtype=np.float64)))
        g, p = (fftconvolve(a, kernel, mode="same") for a in (g, p))
        g, p, mk = g[::2, ::2, ::2], p[::2, ::2, ::2], mk[::2, ::2, ::2]
    ms_ssim = float(np.prod([np.clip(v, 0, 1) for v in values]))
    return {"mae": mae, "psnr": psnr, "ms_ssim": ms_ssim}


def reference_image_metrics(ct: Array, sct: Array, mask: Array, profile: str) -> dict[str, float]:
    if profile == "synthrad2023":
        return reference_2023(ct, sct, mask)
    if profile == "synthrad2025":
        return reference_2025(ct, sct, mask)
    raise ValueError(f"unknown profile {profile!r}")
