"""The proton machine tables our engine reads (no pyRadPlan needed): depth doses by range
label, the energy <-> label map, the lateral cut-off's narrowing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluator.dose.engines.pyradplan import PyRadPlanEngine
from evaluator.dose.engines.torch_pb.proton_physics import (
    CUTOFF_SIGMA_SCALE,
    LATERAL_CUTOFF,
    PROTON_IDD_FILE,
    proton_idd_table,
)


def _r80(z: np.ndarray, idd: np.ndarray) -> float:
    """Distal depth where the depth dose falls to 80 % of its peak (linear between samples)."""
    i = int(np.argmax(idd))
    j = i + int(np.flatnonzero(idd[i:] < 0.8 * idd[i])[0])
    return float(np.interp(0.8 * idd[i], [idd[j], idd[j - 1]], [z[j], z[j - 1]]))


def _table() -> dict[str, list]:
    return dict(json.loads(PROTON_IDD_FILE.read_text()))


@pytest.mark.parametrize("index", [0, 20, 57, 113])
def test_machine_energy_label_gives_its_tabulated_depth_dose(index: int) -> None:
    t = _table()
    depths, idd = np.asarray(t["depth_mm"][index]), np.asarray(t["idd"][index])
    # a plan stores labels to 3 decimals
    z, table = proton_idd_table(np.array([round(t["range_mm"][index], 3)]))
    inner = depths < depths[-1] - 0.1  # the grid's last sample before the cut-off may be 0
    assert np.interp(depths[inner], z, table[0]) == pytest.approx(
        idd[inner], rel=1e-3, abs=1e-4 * idd.max())
    assert np.all(table[0][z > depths[-1] + 0.1] == 0.0)  # pyRadPlan's depth cut-off


def test_label_between_energies_shifts_the_depth_dose() -> None:
    t = _table()
    labels = np.asarray(t["range_mm"])
    i = 40
    mid = 0.5 * (labels[i] + labels[i + 1])
    z, table = proton_idd_table(np.array([labels[i], mid, labels[i + 1]]))
    r80 = [_r80(z, row) for row in table]
    assert r80[0] < r80[1] < r80[2]
    assert r80[1] == pytest.approx(0.5 * (r80[0] + r80[2]), abs=0.1)


def test_energies_map_to_their_labels() -> None:
    t = _table()
    energies = np.asarray(t["energy_mev"])[[3, 50, 100]]
    assert PyRadPlanEngine.ranges_mm(energies) == pytest.approx(
        np.asarray(t["range_mm"])[[3, 50, 100]])
    # the labels grow with energy, a few millimetres apart
    assert np.all(np.diff(t["range_mm"]) > 0.5)


def test_cutoff_scale_is_the_variance_of_the_cut_gaussian() -> None:
    # a unit 2-D Gaussian cut where it holds LATERAL_CUTOFF of its integral, renormalised
    r = np.linspace(0.0, 6.0, 600001)
    density = r * np.exp(-0.5 * r**2)
    cdf = 1 - np.exp(-0.5 * r**2)
    inside = cdf <= LATERAL_CUTOFF
    var_per_axis = 0.5 * np.trapezoid((r**2 * density)[inside], r[inside]) / np.trapezoid(
        density[inside], r[inside])
    assert pytest.approx(np.sqrt(var_per_axis), abs=1e-4) == CUTOFF_SIGMA_SCALE
    assert 0.98 < CUTOFF_SIGMA_SCALE < 0.99
