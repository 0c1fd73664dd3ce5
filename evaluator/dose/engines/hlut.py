"""HU conversions.

One piecewise-linear table (matRad's default HLUT, also pyRadPlan's) maps HU to relative
electron density for photons and to relative stopping power (water = 1) for protons, so the
own engine and the reference engine see the same patient.  Values outside the table are
clamped to its end points.

    HU      -1024  -999   -90   -45    0    100    350   3000
    value   0.001  0.001  0.95  0.99  1.0  1.095  1.199  2.505
"""

from __future__ import annotations

import functools

import numpy as np
import torch

HLUT_HU = (-1024.0, -999.0, -90.0, -45.0, 0.0, 100.0, 350.0, 3000.0)
HLUT_VALUE = (0.001, 0.001, 0.95, 0.99, 1.0, 1.095, 1.199, 2.505)


def hu_to_density(hu: np.ndarray) -> np.ndarray:
    """Relative electron density (photons)."""
    return np.interp(np.asarray(hu, dtype=np.float64), HLUT_HU, HLUT_VALUE).astype(np.float32)


def hu_to_density_torch(hu: torch.Tensor) -> torch.Tensor:
    """Same table in torch (stays on the tensor's device).  The table's break points are
    whole HU, so it is tabulated at every whole HU and interpolated between neighbours:
    exact, and a gather instead of a search per voxel."""
    first = int(HLUT_HU[0])
    lut = _integer_table(str(hu.device), hu.dtype)
    h = hu.clamp(HLUT_HU[0], HLUT_HU[-1]) - first
    i = h.floor().long().clamp_(max=len(lut) - 2)
    t = h - i
    lo = lut[i]
    return lo + t * (lut[i + 1] - lo)


@functools.lru_cache(maxsize=8)
def _integer_table(device: str, dtype: torch.dtype) -> torch.Tensor:
    whole = np.arange(int(HLUT_HU[0]), int(HLUT_HU[-1]) + 1, dtype=np.float64)
    return torch.as_tensor(np.interp(whole, HLUT_HU, HLUT_VALUE), dtype=dtype, device=device)
