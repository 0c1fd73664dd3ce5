from __future__ import annotations

import numpy as np
import pytest

from evaluator.dose.metrics import (
    conformity_index,
    d_at,
    dose_metrics,
    dvh_metric,
    mae_target,
    select_oars,
)


def test_d_at_and_mae() -> None:
    dose = np.arange(1, 101, dtype=float)
    assert d_at(dose, 98.0) == pytest.approx(np.percentile(dose, 2))
    assert d_at(dose, 2.0) == pytest.approx(np.percentile(dose, 98))
    d_ct = np.array([2.0, 1.9, 1.0, 0.1])
    d_sct = np.array([1.9, 2.0, 0.0, 0.0])
    # only voxels with d_ct >= 1.8 Gy count
    assert mae_target(d_ct, d_sct, 2.0) == pytest.approx(0.05)


def test_conformity_index() -> None:
    dose = np.zeros(100)
    target = np.zeros(100, bool)
    target[:10] = True
    dose[:8] = 2.0  # 8 of 10 target voxels covered
    dose[50:52] = 2.0  # 2 voxels outside
    assert conformity_index(dose, target, 2.0) == pytest.approx(8**2 / (10 * 10))


def test_dvh_metric_and_oar_choice() -> None:
    rng = np.random.default_rng(0)
    d_ct = rng.uniform(0, 2.2, 1000)
    target = d_ct > 1.9
    oars = {f"o{i}": (np.arange(1000) % 5 == i) & ~target for i in range(5)}
    d_ct[oars["o4"]] *= 0.1
    assert "o4" not in select_oars(d_ct, oars)
    assert len(select_oars(d_ct, oars)) == 3
    assert dvh_metric(d_ct, d_ct, target, oars, 2.0) == 0.0
    assert dvh_metric(d_ct, d_ct * 1.05, target, oars, 2.0) > 0.05


def test_dose_metrics_keys() -> None:
    d = np.zeros((8, 8, 8))
    d[2:6, 2:6, 2:6] = 2.0
    target = d > 1.0
    out = dose_metrics(d, d, (3.0, 3.0, 3.0), target, {}, 2.0, "proton")
    assert out == {"mae_target_proton": 0.0, "dvh_proton": 0.0, "gamma_proton": 100.0}
