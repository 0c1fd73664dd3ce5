"""Tabulate the Generic proton machine's lateral scattering sigma(depth) for the own engine.

    .venv-pyradplan/bin/python scripts/fit_proton_sigma.py   # pyRadPlan's own environment

pyRadPlan's Hong pencil beam (single-Gaussian model) widens a spot to
sigma^2 = sigma_ini^2 + sigma_mcs(E, d)^2, with sigma_mcs tabulated per energy over
water-equivalent depth d.  Near the end of range that table flattens and then narrows
(the protons that scattered most stop first), so an analytic profile that keeps growing
makes the dose react too strongly to a range shift (an sCT's HU bias).  This script samples
the machine's sigma_mcs per energy at fixed fractions d/R of our model's range R (the range
with the same distal R80, ``PyRadPlanEngine.ranges_mm``) and writes the table to
evaluator/dose/engines/proton_sigma.json; the engine interpolates it linearly in R and d/R.
It also stores the machine's initial spot size sigma_ini per energy at its focus table's
source-to-surface distances (the engine interpolates it in R and at the beam's SSD, as
pyRadPlan does per ray).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "evaluator" / "dose" / "engines" / "proton_sigma.json"
# fine where the table bends (the last 10 % of the range); beyond ~1.03 R (the dose there
# is a few % of the peak at most) the table jumps to the wide halo of the last few protons,
# which would widen the layer's largest Gaussian for nothing: clamped there
DEPTH_NODES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9,
               0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03)
ENERGY_STEP = 3  # every 3rd of the machine's 114 energies (ranges ~8 mm apart)


def main() -> None:
    from pyRadPlan.machines import load_from_name

    from evaluator.dose.engines.pyradplan import PyRadPlanEngine

    machine = load_from_name("protons", "Generic")
    energies = np.asarray(machine.energies, dtype=np.float64)
    index = list(range(0, len(energies), ENERGY_STEP))
    if index[-1] != len(energies) - 1:
        index.append(len(energies) - 1)
    ranges = PyRadPlanEngine.ranges_mm(energies[index])
    rows, ini = [], []
    ssd_nodes = np.asarray(machine.get_foci_by_index(0)[0].dist, dtype=np.float64)
    for i, r in zip(index, ranges, strict=True):
        focus = machine.get_foci_by_index(i)[0]
        ini.append(np.interp(ssd_nodes, np.asarray(focus.dist, dtype=np.float64),
                             np.asarray(focus.sigma, dtype=np.float64)))
        kernel = machine.get_kernel_by_index(i)
        depths = np.asarray(kernel.depths, dtype=np.float64) + float(kernel.offset)
        rows.append(np.interp(np.asarray(DEPTH_NODES) * r, depths,
                              np.asarray(kernel.sigma, dtype=np.float64)))
    OUT.write_text(json.dumps({
        "source": "pyRadPlan Generic proton machine, single-Gaussian sigma (mm)",
        "range_mm": [round(float(r), 3) for r in ranges],
        "depth_over_range": list(DEPTH_NODES),
        "sigma_mm": [[round(float(v), 4) for v in row] for row in rows],
        "ssd_mm": [float(v) for v in ssd_nodes],
        "sigma_ini_mm": [[round(float(v), 4) for v in row] for row in ini],
    }, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: {len(rows)} energies x {len(DEPTH_NODES)} depths")


if __name__ == "__main__":
    main()
