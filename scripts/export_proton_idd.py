"""Tabulate the Generic proton machine's integral depth doses for the own engine.

    /path/to/pyradplan-venv/bin/python scripts/export_proton_idd.py   # pyRadPlan's environment

pyRadPlan's Hong pencil beam interpolates each energy's tabulated integral depth dose (IDD)
linearly at the water-equivalent depth.  An analytic fit (range-energy law, straggling,
fluence loss; engine models <= 7) was off by up to +-1 % in the plateau of the brain's
energies: the target's dose level 0.5 % low, so fewer voxels passed the MAE region's
90 %-of-Rx threshold and its MAE under a soft-tissue bias came out 1-4 % low (issue 19).
This script writes every energy's table (depth nodes, IDD in MeV/mm per proton = the
machine's MeV cm^2/g / 10) to evaluator/dose/engines/proton_idd.json.

Plans name a layer by our range label R (``range_mm``), not by energy.  The label of a
machine energy stays what it was under the analytic law (the R whose analytic depth dose has
the machine's distal R80, ``_analytic_r80``), so stored plans keep naming the same energies;
the table maps label <-> energy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "evaluator" / "dose" / "engines" / "proton_idd.json"
# the analytic depth-dose law of engine models <= 7 (range label definition only)
RANGE_ALPHA, RANGE_P = 0.022, 1.694
NUCLEAR_LOSS_PER_MM, ENERGY_SPREAD_SIGMA_MM = 0.001173, 2.202
BUILDUP_PER_MM, BUILDUP_DEPTH_MM, GAIN = 0.000535, 14.79, (0.8074, 0.000381)


def _analytic_idd(r_full: float, z: np.ndarray, dz: float) -> np.ndarray:
    q = 1.0 / RANGE_P
    coef = 1.0 / (RANGE_P * RANGE_ALPHA**q)
    lo = np.clip(r_full - (z + dz / 2), 0.0, None)
    hi = np.clip(r_full - (z - dz / 2), 0.0, None)
    deposit = (coef * (hi**q - lo**q) / q / dz * np.clip(1.0 - NUCLEAR_LOSS_PER_MM * z, 0, None)
               * (1.0 - BUILDUP_PER_MM * r_full * np.exp(-z / BUILDUP_DEPTH_MM))
               * (GAIN[0] + GAIN[1] * r_full))
    straggle = math.hypot(0.12 * (r_full / 10.0) ** 0.951, ENERGY_SPREAD_SIGMA_MM)
    half = math.ceil(4 * straggle / dz)
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * dz / straggle) ** 2)
    padded = np.concatenate([np.full(half, deposit[0]), deposit, np.zeros(half)])
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def _r80(depths: np.ndarray, idd: np.ndarray) -> float:
    i = int(np.argmax(idd))
    tail = idd[i:] / idd[i]
    j = int(np.flatnonzero(tail < 0.8)[0])
    z0, z1, f0, f1 = depths[i + j - 1], depths[i + j], tail[j - 1], tail[j]
    return float(z0 + (f0 - 0.8) / (f0 - f1) * (z1 - z0))


def _analytic_r80() -> tuple[np.ndarray, np.ndarray]:
    """The analytic law's R80 over a grid of R (monotonic, to invert)."""
    grid = np.arange(5.0, 425.0, 10.0)
    dz = 0.1
    r80 = [_r80(z, _analytic_idd(r, z, dz)) for r in grid
           for z in [np.arange(0.0, r * 1.15 + 20.0, dz)]]
    return np.asarray(r80), grid


def main() -> None:
    from pyRadPlan.machines import load_from_name

    machine = load_from_name("protons", "Generic")
    r80_law, r_grid = _analytic_r80()
    energies, labels, peaks, depths, idds = [], [], [], [], []
    for i, energy in enumerate(np.asarray(machine.energies, dtype=np.float64)):
        kernel = machine.get_kernel_by_index(i)
        z = np.asarray(kernel.depths, dtype=np.float64) + float(kernel.offset)
        idd = np.asarray(kernel.idd, dtype=np.float64) / 10.0  # MeV cm^2/g -> MeV/mm
        energies.append(round(float(energy), 6))
        labels.append(round(float(np.interp(_r80(z, idd), r80_law, r_grid)), 4))
        peaks.append(round(float(np.asarray(machine.peak_positions)[i]), 4))
        depths.append([round(float(v), 3) for v in z])
        idds.append([float(f"{v:.6g}") for v in idd])
    assert np.all(np.diff(labels) > 0), "range labels must grow with energy"
    OUT.write_text(json.dumps({
        "source": "pyRadPlan Generic proton machine: integral depth doses, MeV/mm per proton",
        "energy_mev": energies, "range_mm": labels, "peak_mm": peaks,
        "depth_mm": depths, "idd": idds,
    }, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: {len(energies)} energies, {sum(map(len, depths))} depth nodes")


if __name__ == "__main__":
    main()
