"""The reference engine in its own virtualenv, called as a subprocess.

The round trip runs where a pyRadPlan environment exists (``.venv-pyradplan`` in the
repository root, or SYNTHARENA_TEST_PYRADPLAN_PYTHON naming its interpreter); the error
paths run everywhere, against the platform's own interpreter (which has no pyRadPlan).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from evaluator.dose.engines import DoseComputationError
from evaluator.dose.engines import pyradplan_remote as remote
from evaluator.dose.engines.pyradplan import PyRadPlanEngine, available, in_process

from .conftest import SPACING, make_plan, phantom

pytestmark = pytest.mark.skipif(in_process(), reason="pyRadPlan is importable here")


@pytest.fixture()
def reference(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    remote.set_reference_python(None)


def test_without_an_environment_the_error_says_how_to_make_one(
    tmp_path: Path, reference: None
) -> None:
    remote.set_reference_python(tmp_path / "no-venv" / "bin" / "python")
    if remote.DEFAULT_PYTHON.is_file():
        pytest.skip("the default pyRadPlan environment exists")
    assert not available()
    with pytest.raises(DoseComputationError, match=r"python3 -m venv \.venv-pyradplan"):
        PyRadPlanEngine()


def test_a_failure_in_the_environment_comes_back_with_its_message(reference: None) -> None:
    """An interpreter without pyRadPlan as the 'environment': the subprocess's own
    DoseComputationError is raised here, message intact."""
    remote.set_reference_python(sys.executable)
    hu, labels = phantom()
    with pytest.raises(DoseComputationError, match="pyradplan engine is not installed"):
        remote.call("optimize", {"ct": hu, "labels": labels}, make_plan("photon"), SPACING)


def _reference_python() -> Path | None:
    given = os.environ.get("SYNTHARENA_TEST_PYRADPLAN_PYTHON")
    if given:
        return Path(given)
    return remote.DEFAULT_PYTHON if remote.DEFAULT_PYTHON.is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_reference_python() is None, reason="no pyRadPlan environment")
def test_round_trip_through_the_environment(reference: None) -> None:
    remote.set_reference_python(_reference_python())
    hu, labels = phantom()
    ref = PyRadPlanEngine()
    assert ref.remote
    plan = make_plan("proton")
    listed = ref.plan_with_beamlets(hu, SPACING, plan, labels)
    assert listed.beamlets is not None and len(listed.weights["pyradplan"]) > 0
    dose = ref.compute(hu, SPACING, listed, labels)
    assert dose.shape == hu.shape
    assert dose[labels == 2].mean() == pytest.approx(2.0, rel=0.02)
    energies = np.array(listed.beamlets[0]["energy_mev"])
    ranges = PyRadPlanEngine.ranges_mm(energies)
    assert np.allclose(ranges, listed.beamlets[0]["range_mm"])
    spots = ref.spots(hu, SPACING, listed, labels)
    assert len(spots) == len(listed.beams)
    assert np.allclose(spots[0]["pos_bev"][:, 0], listed.beamlets[0]["u_mm"])
