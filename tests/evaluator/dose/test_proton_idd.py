"""Our proton depth dose (the machine's tables by range label) and spot size against pyRadPlan's
Generic machine (if installed)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.dose.engines.torch_pb import (
    PROTON_GY_PER_WEIGHT,
    proton_idd_table,
    proton_spot_sigma_mm,
)
from evaluator.dose.engines.torch_pb.proton_physics import proton_mcs_sigma_nodes

pytest.importorskip("pyRadPlan")
from pyRadPlan.machines import load_from_name

from evaluator.dose.engines.pyradplan import PyRadPlanEngine


@pytest.mark.parametrize("index", [30, 50, 70, 90])
def test_idd_matches_generic_machine(index: int) -> None:
    machine = load_from_name("protons", "Generic")
    energy = float(np.asarray(machine.energies)[index])
    kernel = machine.get_kernel_by_index(index)
    depths = np.asarray(kernel.depths)
    ref = np.asarray(kernel.idd) * 1.6021766208e-02  # Gy mm^2 per 1e6 protons (matRad)
    r = PyRadPlanEngine.ranges_mm(np.array([energy]))
    z, idd = proton_idd_table(r)
    ours = np.interp(depths, z, idd[0]) * PROTON_GY_PER_WEIGHT
    peak = float(np.asarray(machine.peak_positions)[index])
    assert abs(depths[np.argmax(ours)] - peak) < 1.5
    proximal = depths < peak
    assert np.abs(ours - ref)[proximal].max() < 0.2 * ref.max()
    assert np.abs(ours - ref)[depths < peak + 15].max() < 0.06 * ref.max()


@pytest.mark.parametrize("index", [10, 40, 70, 100])
def test_spot_sigma_matches_generic_machine(index: int) -> None:
    machine = load_from_name("protons", "Generic")
    energy = float(np.asarray(machine.energies)[index])
    kernel = machine.get_kernel_by_index(index)
    focus = machine.get_foci_by_index(index)[0]
    peak = float(np.asarray(machine.peak_positions)[index])
    sigma_ini = np.interp(9900.0, np.asarray(focus.dist), np.asarray(focus.sigma))
    r = float(PyRadPlanEngine.ranges_mm(np.array([energy]))[0])
    depths = np.array([0.3, 0.6, 0.9, 0.95, 1.0]) * peak
    machine_mcs = np.interp(depths, np.asarray(kernel.depths), np.asarray(kernel.sigma))
    nodes, table = proton_mcs_sigma_nodes(r)
    # our table, between its energies and depth nodes, follows the machine's sigma(depth)
    assert np.abs(np.interp(depths / r, nodes, table) - machine_mcs).max() < 0.3
    widest = np.interp(np.linspace(0, 1.03 * r, 200), np.asarray(kernel.depths),
                       np.asarray(kernel.sigma)).max()
    assert proton_spot_sigma_mm(r) == pytest.approx(np.hypot(sigma_ini, widest), abs=1.0)
