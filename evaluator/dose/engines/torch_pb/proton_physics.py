"""The proton machine: pyRadPlan's Generic proton machine fitted by an analytic model.

An integral depth dose per energy layer computed from the range-energy law R = a E^p
(stopping power ~ residual range^(1/p - 1)), with nuclear fluence loss and range straggling;
lateral sigma = initial spot size (+) multiple Coulomb scattering, both fitted to the
machine (see the constants).
"""

from __future__ import annotations

import math

import numpy as np
import torch

PROTON_SAD_MM = 10000.0
# spot size and scattering fitted like the photons to pyRadPlan's Generic proton
# machine (one field, 1474 spots).  Depth dose fitted globally (least squares, every 7th energy,
# up to 1.1x the peak depth; RMS 1.2 % of the peak) to the machine's tabulated integral depth
# doses: range-energy exponent p, Bortfeld range straggling plus a constant 2.2 mm (energy
# spread) in quadrature, linear fluence loss, an entrance build-up (secondaries) of depth
# PROTON_BUILDUP_DEPTH_MM and relative size PROTON_BUILDUP_PER_MM * R, and a gain a + b R;
# MeV/mm per proton (the machine's MeV cm^2/g / 10)
RANGE_ALPHA = 0.0022 * 10.0  # mm / MeV^p (R = a E^p, water)
RANGE_P = 1.694
NUCLEAR_LOSS_PER_MM = 0.001173
ENERGY_SPREAD_SIGMA_MM = 2.202
PROTON_BUILDUP_PER_MM = 0.000535
PROTON_BUILDUP_DEPTH_MM = 14.79
IDD_GAIN = (0.8074, 0.000381)  # gain = a + b * R (R in mm)
# lateral: pyRadPlan's Generic machine gives sigma^2 = sigma_ini(E)^2 + sigma_mcs(E, depth)^2;
# fitted: sigma_ini at ~9.9 m from the source = A - B ln R (max error 1.3 mm) and sigma_mcs at
# 0.9x the peak depth = MCS_A R^MCS_EXP (max error 0.8 mm; one sigma per layer)
SPOT_SIGMA_A_MM = 14.50
SPOT_SIGMA_B_MM = 1.858
MCS_A = 0.1649
MCS_EXP = 0.6263
# sigma_mcs grows with depth: sigma_mcs(d) = sigma_mcs(0.9 P) * g(d / R); g tabulated at
# d/R = 0, 0.1, ..., 1.0 (median over the Generic machine's energies above 40 mm range)
MCS_DEPTH_PROFILE = (0.0, 0.224, 0.307, 0.375, 0.436, 0.513, 0.613, 0.716, 0.849, 1.022, 1.11)
STRAGGLING_FACTOR = 1.0
# the machine's depth doses were measured with the nozzle 1000 mm before the isocentre; the
# air between nozzle and skin adds 0.0011 mm water-equivalent per mm (matRad/pyRadPlan's
# air offset correction): WEPL += 0.0011 * (SSD + 1000 - SAD)
PROTON_NOZZLE_TO_ISO_MM = 1000.0
AIR_WEPL_PER_MM = 0.0011
# absolute calibration: our dose per unit weight = pyRadPlan's (Generic machines), so stored
# weights and the reference engine's weights mean the same thing.  Protons: matRad's
# 1.602e-2 Gy mm^2 per (MeV cm^2/g), x 10 for our MeV/mm
PROTON_GY_PER_WEIGHT = 0.16022


def proton_spot_sigmas_mm(range_mm: float) -> tuple[float, float]:
    """Initial spot sigma and multiple-Coulomb-scattering sigma at 0.9x the peak depth."""
    r = max(range_mm, 1.0)
    return max(SPOT_SIGMA_A_MM - SPOT_SIGMA_B_MM * math.log(r), 1.0), MCS_A * r**MCS_EXP


def proton_spot_sigma_mm(range_mm: float) -> float:
    """Lateral sigma of one energy layer at 0.9x the peak depth: initial (+) MCS."""
    return math.hypot(*proton_spot_sigmas_mm(range_mm))


def proton_air_offset_mm(ssd_mm: float, sad_mm: float = PROTON_SAD_MM) -> float:
    """Water-equivalent thickness (mm) of the air between the nozzle and the skin."""
    return AIR_WEPL_PER_MM * (ssd_mm + PROTON_NOZZLE_TO_ISO_MM - sad_mm)


def proton_mcs_fraction(depth_over_range: torch.Tensor) -> torch.Tensor:
    """g(d/R)^2 / g(1)^2: where between the entrance and the end-of-range spot variance a
    point at depth d lies (variance is linear in it)."""
    nodes = torch.as_tensor(MCS_DEPTH_PROFILE, dtype=depth_over_range.dtype,
                            device=depth_over_range.device)
    x = (depth_over_range.clamp(0.0, 1.0) * (len(nodes) - 1))
    i0 = x.floor().long().clamp(max=len(nodes) - 2)
    f = x - i0
    g = nodes[i0] * (1 - f) + nodes[i0 + 1] * f
    return (g / nodes[-1]) ** 2


def proton_idd_table(ranges_mm: np.ndarray, dz: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Integral depth dose (MeV/mm per proton) on a depth grid for each range."""
    zmax = float(ranges_mm.max()) * 1.15 + 20.0
    z = np.arange(0.0, zmax, dz)
    q = 1.0 / RANGE_P
    coef = 1.0 / (RANGE_P * RANGE_ALPHA**q)  # dE/dx = coef * r^(q-1)
    out = np.zeros((len(ranges_mm), len(z)))
    for i, r_full in enumerate(ranges_mm):
        lo = np.clip(r_full - (z + dz / 2), 0.0, None)
        hi = np.clip(r_full - (z - dz / 2), 0.0, None)
        # cell average of the stopping power over the residual-range interval [lo, hi]
        energy = coef * (hi**q - lo**q) / q
        fluence = np.clip(1.0 - NUCLEAR_LOSS_PER_MM * z, 0.0, None)
        buildup = 1.0 - PROTON_BUILDUP_PER_MM * r_full * np.exp(-z / PROTON_BUILDUP_DEPTH_MM)
        deposit = energy / dz * fluence * buildup * (IDD_GAIN[0] + IDD_GAIN[1] * r_full)
        bortfeld = 0.012 * 10.0 * (r_full / 10.0) ** 0.951
        straggle = math.sqrt(bortfeld**2 + ENERGY_SPREAD_SIGMA_MM**2) * STRAGGLING_FACTOR
        half = math.ceil(4 * straggle / dz)
        kz = np.arange(-half, half + 1) * dz
        kernel = np.exp(-0.5 * (kz / straggle) ** 2)
        # extend the entrance value upstream so the convolution does not dent the entrance
        padded = np.concatenate([np.full(half, deposit[0]), deposit, np.zeros(half)])
        out[i] = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return z, out
