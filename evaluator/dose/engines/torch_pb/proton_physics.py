"""The proton machine: pyRadPlan's Generic proton machine, from its own tables.

Per energy layer the machine's tabulated integral depth dose (``proton_idd.json``, written by
scripts/export_proton_idd.py); lateral sigma = initial spot size (+) multiple Coulomb
scattering, the machine's focus and sigma tables (``proton_sigma.json``,
scripts/fit_proton_sigma.py).  A layer is named by its range label R (mm), which maps to a
machine energy one to one.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch

PROTON_SAD_MM = 10000.0
# depth dose: the machine's table of the layer's energy, linear between its depth nodes and
# none beyond its last (like pyRadPlan; engine models <= 7 used an analytic fit, up to +-1 %
# off in the plateau: the brain target's dose 0.5 % low, issue 19); MeV/mm per proton (the
# machine's MeV cm^2/g / 10)
# lateral: pyRadPlan's Generic machine gives sigma^2 = sigma_ini(E, SSD)^2 + sigma_mcs(E, depth)^2,
# both the machine's own tables (proton_sigma.json, written by scripts/fit_proton_sigma.py):
# sigma_mcs per energy over depth flattens and narrows over the last ~5 % of the range, which
# decides how the dose reacts to a range shift (an sCT's HU bias); sigma_ini per energy at
# the source-to-surface distance (a fit A - B ln R, up to 0.6 mm narrow at R 35-80 mm, made
# the brain's MAE dose react 2-3 % more to a soft-tissue bias than pyRadPlan's, issue 19)
# pyRadPlan cuts each spot's Gaussian off where it holds 99.5 % of the layer's dose (the
# radius r_c = sigma sqrt(2 ln 200)) and scales what is left by 1/0.995: the integral stays,
# the profile narrows (its variance per axis x 1 - ln(200) 0.005/0.995).  Our separable blur
# cannot cut radially; a Gaussian of that variance moves the dose at a field's edge as the
# cut does (ignoring it left the brain target's dose 0.2 % low and the MAE region of the
# small brain 1-2 % short of voxels, issue 19)
LATERAL_CUTOFF = 0.995
CUTOFF_SIGMA_SCALE = math.sqrt(
    1.0 + math.log(1.0 - LATERAL_CUTOFF) * (1.0 - LATERAL_CUTOFF) / LATERAL_CUTOFF)
DEFAULT_SSD_MM = 9900.0  # where no SSD is given: ~10 cm of patient before the isocentre
PROTON_SIGMA_FILE = Path(__file__).parents[1] / "proton_sigma.json"
# the machine's tabulated depth doses per energy, named by our range label R
# (scripts/export_proton_idd.py)
PROTON_IDD_FILE = Path(__file__).parents[1] / "proton_idd.json"
LABEL_TOL_MM = 2e-3  # a label this close to a machine energy's is that energy
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


@functools.cache
def _idd_table() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """The machine's depth doses: range labels (n_e,), per energy depth nodes and IDD."""
    t = json.loads(PROTON_IDD_FILE.read_text())
    return (np.asarray(t["range_mm"], np.float64),
            [np.asarray(z, np.float64) for z in t["depth_mm"]],
            [np.asarray(d, np.float64) for d in t["idd"]])


def proton_range_labels() -> tuple[np.ndarray, np.ndarray]:
    """The machine's energies (MeV) and their range labels R (mm), both increasing."""
    t = json.loads(PROTON_IDD_FILE.read_text())
    return np.asarray(t["energy_mev"], np.float64), np.asarray(t["range_mm"], np.float64)


def _machine_idd(i: int, z: np.ndarray) -> np.ndarray:
    """Energy i's tabulated IDD at depths z: linear between its nodes, none beyond its last
    (pyRadPlan's depth cut-off), the entrance value before its first."""
    _, depths, idds = _idd_table()
    return np.asarray(np.interp(z, depths[i], idds[i], right=0.0))


def proton_idd_table(ranges_mm: np.ndarray, dz: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Integral depth dose (MeV/mm per proton) on a depth grid for each range label: the
    machine's table of that energy; between two energies the two tables shifted to the
    label's range and blended linearly (labels outside the table: the nearest one shifted)."""
    labels, depths, _ = _idd_table()
    r = np.asarray(ranges_mm, np.float64).ravel()
    zmax = max((float(depths[min(int(np.searchsorted(labels, x)), len(labels) - 1)][-1])
                + max(x - float(labels[-1]), 0.0) + 2 * dz for x in r), default=dz)
    z = np.arange(0.0, zmax, dz)
    out = np.zeros((len(r), len(z)))
    for k, x in enumerate(r):
        j = int(np.searchsorted(labels, x))
        near = int(np.argmin(np.abs(labels - x)))
        if abs(labels[near] - x) < LABEL_TOL_MM:  # a machine energy (plans store 3 decimals)
            out[k] = _machine_idd(near, z)
        elif j == 0 or j == len(labels):
            i = min(j, len(labels) - 1)
            out[k] = _machine_idd(i, z - (x - labels[i]))
        else:
            f = (x - labels[j - 1]) / (labels[j] - labels[j - 1])
            out[k] = ((1 - f) * _machine_idd(j - 1, z - (x - labels[j - 1]))
                      + f * _machine_idd(j, z + (labels[j] - x)))
    return z, out
