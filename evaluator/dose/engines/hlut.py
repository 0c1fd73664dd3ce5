"""HU conversions.

One piecewise-linear table (matRad's default HLUT, also pyRadPlan's) maps HU to relative
electron density for photons and to relative stopping power (water = 1) for protons, so the
own engine and the reference engine see the same patient.  Values outside the table are
clamped to its end points.

    HU      -1024  -999   -90   -45    0    100    350   3000
    value   0.001  0.001  0.95  0.99  1.0  1.095  1.199  2.505
"""

from __future__ import annotations

import numpy as np
import torch

HLUT_HU = (-1024.0, -999.0, -90.0, -45.0, 0.0, 100.0, 350.0, 3000.0)
HLUT_VALUE = (0.001, 0.001, 0.95, 0.99, 1.0, 1.095, 1.199, 2.505)


def hu_to_density(hu: np.ndarray) -> np.ndarray:
    """Relative electron density (photons)."""
    return np.interp(np.asarray(hu, dtype=np.float64), HLUT_HU, HLUT_VALUE).astype(np.float32)


def hu_to_stopping_power(hu: np.ndarray) -> np.ndarray:
    """Relative stopping power to water (protons)."""
    return hu_to_density(hu)


def hu_to_density_torch(hu: torch.Tensor) -> torch.Tensor:
    """Same table in torch (stays on the tensor's device)."""
    xs = torch.tensor(HLUT_HU, dtype=hu.dtype, device=hu.device)
    ys = torch.tensor(HLUT_VALUE, dtype=hu.dtype, device=hu.device)
    h = hu.clamp(xs[0], xs[-1])
    i = torch.clamp(torch.searchsorted(xs, h.contiguous(), right=True) - 1, 0, len(xs) - 2)
    t = (h - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + t * (ys[i + 1] - ys[i])
