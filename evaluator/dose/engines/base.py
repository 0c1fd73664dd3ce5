"""The dose engine interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from evaluator.dose.plan import Plan


class DoseComputationError(RuntimeError):
    """A dose could not be computed (bad input, engine failure, missing weights)."""


class StaleWeightsError(DoseComputationError):
    """The plan's stored weights do not fit the engine's beamlet layout (e.g. the plan was
    optimised by an older engine version whose steering differed)."""


class DoseEngine(Protocol):
    """Computes the physical dose (Gy) of ``plan`` on the CT grid.

    ``ct_hu`` is indexed (z, y, x); ``spacing`` is (x, y, z) mm as SimpleITK reports it;
    ``labels`` is the structure map on the same grid.  ``planning_ct_hu`` is the real CT the
    plan was made on: beamlet layouts (which rays, which proton energies) come from it, so
    an sCT is recomputed with exactly the planned beamlets.  Without stored weights for this
    engine in ``plan.weights[engine.name]`` the engine raises DoseComputationError.
    """

    name: str
    # Bumped whenever the engine's physics changes: cached CT doses of an older model are
    # never compared with sCT doses of a newer one.
    model_version: str

    def compute(
        self,
        ct_hu: np.ndarray,
        spacing: Sequence[float],
        plan: Plan,
        labels: np.ndarray,
        planning_ct_hu: np.ndarray | None = None,
    ) -> np.ndarray: ...

    def optimize(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> list[float]:
        """Beamlet weights that deliver the prescription to the target on ``ct_hu``."""
        ...
