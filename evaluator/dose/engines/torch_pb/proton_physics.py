"""The proton machine: pyRadPlan's Generic proton machine fitted by an analytic model.

An integral depth dose per energy layer computed from the range-energy law R = a E^p
(stopping power ~ residual range^(1/p - 1)), with nuclear fluence loss and range straggling;
lateral sigma = initial spot size (+) multiple Coulomb scattering, both fitted to the
machine (see the constants).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

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
# lateral: pyRadPlan's Generic machine gives sigma^2 = sigma_ini(E, SSD)^2 + sigma_mcs(E, depth)^2,
# both the machine's own tables (proton_sigma.json, written by scripts/fit_proton_sigma.py):
# sigma_mcs per energy over depth flattens and narrows over the last ~5 % of the range, which
# decides how the dose reacts to a range shift (an sCT's HU bias); sigma_ini per energy at
# the source-to-surface distance (a fit A - B ln R, up to 0.6 mm narrow at R 35-80 mm, made
# the brain's MAE dose react 2-3 % more to a soft-tissue bias than pyRadPlan's, issue 19)
DEFAULT_SSD_MM = 9900.0  # where no SSD is given: ~10 cm of patient before the isocentre
PROTON_SIGMA_FILE = Path(__file__).parents[1] / "proton_sigma.json"
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


@functools.cache
def _sigma_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The machine's sigma_mcs (mm): ranges (n_r,), depth/range nodes (n_x,), (n_r, n_x)."""
    t = json.loads(PROTON_SIGMA_FILE.read_text())
    return (np.asarray(t["range_mm"], np.float64), np.asarray(t["depth_over_range"], np.float64),
            np.asarray(t["sigma_mm"], np.float64))


@functools.cache
def _sigma_ini_table() -> tuple[np.ndarray, np.ndarray]:
    """The machine's initial spot sigma (mm): SSD nodes (n_s,), (n_r, n_s) per range."""
    t = json.loads(PROTON_SIGMA_FILE.read_text())
    return np.asarray(t["ssd_mm"], np.float64), np.asarray(t["sigma_ini_mm"], np.float64)


def proton_sigma_ini_mm(range_mm: float, ssd_mm: float = DEFAULT_SSD_MM) -> float:
    """Initial spot sigma of a layer of range R entering at ``ssd_mm`` from the source:
    linear between the tabulated energies and SSDs (clamped at the table's ends)."""
    ranges = _sigma_table()[0]
    ssd, table = _sigma_ini_table()
    per_range = [float(np.interp(ssd_mm, ssd, row)) for row in table]
    return float(np.interp(range_mm, ranges, per_range))


def proton_mcs_sigma_nodes(range_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """sigma_mcs (mm) of a layer of range R at the table's depth/range nodes (nodes,
    sigmas), linear between the tabulated energies (clamped at the table's ends)."""
    ranges, nodes, table = _sigma_table()
    j = int(np.clip(np.searchsorted(ranges, range_mm) - 1, 0, len(ranges) - 2))
    f = float(np.clip((range_mm - ranges[j]) / (ranges[j + 1] - ranges[j]), 0.0, 1.0))
    return nodes, table[j] * (1 - f) + table[j + 1] * f


def proton_spot_sigmas_mm(range_mm: float, ssd_mm: float = DEFAULT_SSD_MM
                          ) -> tuple[float, float]:
    """Initial spot sigma (at ``ssd_mm``) and the largest multiple-Coulomb-scattering sigma
    of a layer."""
    r = max(range_mm, 1.0)
    return proton_sigma_ini_mm(r, ssd_mm), float(proton_mcs_sigma_nodes(r)[1].max())


def proton_spot_sigma_mm(range_mm: float, ssd_mm: float = DEFAULT_SSD_MM) -> float:
    """Lateral sigma of one energy layer at its widest: initial (+) MCS."""
    return math.hypot(*proton_spot_sigmas_mm(range_mm, ssd_mm))


def proton_air_offset_mm(ssd_mm: float, sad_mm: float = PROTON_SAD_MM) -> float:
    """Water-equivalent thickness (mm) of the air between the nozzle and the skin."""
    return AIR_WEPL_PER_MM * (ssd_mm + PROTON_NOZZLE_TO_ISO_MM - sad_mm)


def proton_mcs_fraction(wet: torch.Tensor, ranges_mm: np.ndarray) -> torch.Tensor:
    """(K, M): sigma_mcs(R_k, d_m)^2 / max_d sigma_mcs(R_k)^2, where between a layer's
    entrance and widest spot variance a point at water-equivalent depth d lies (variance is
    linear in it); linear in d/R between the table's nodes."""
    rows = []
    nodes = np.zeros(0)
    for r in ranges_mm:
        nodes, sigma = proton_mcs_sigma_nodes(max(float(r), 1.0))
        rows.append(sigma**2 / max(float((sigma**2).max()), 1e-12))
    dt, dev = wet.dtype, wet.device
    if not rows:
        return torch.zeros((0, wet.numel()), dtype=dt, device=dev)
    var = torch.as_tensor(np.stack(rows), dtype=dt, device=dev)  # (K, n_x)
    x_nodes = torch.as_tensor(nodes, dtype=dt, device=dev)
    r = torch.as_tensor(np.maximum(np.asarray(ranges_mm, np.float64), 1.0), dtype=dt,
                        device=dev)
    x = (wet[None, :] / r[:, None]).clamp(0.0, float(nodes[-1]))  # (K, M)
    i0 = (torch.searchsorted(x_nodes, x.contiguous(), right=True) - 1).clamp(0, len(nodes) - 2)
    x0, x1 = x_nodes[i0], x_nodes[i0 + 1]
    f = (x - x0) / (x1 - x0)
    v0 = torch.gather(var, 1, i0)
    return v0 + f * (torch.gather(var, 1, i0 + 1) - v0)


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
