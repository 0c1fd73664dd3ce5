"""Own pencil-beam engine ``torch_pb`` in torch (CPU or CUDA): photons and protons.

Both models trace diverging rays through the CT in a beam's-eye-view grid, accumulate
radiological (water-equivalent) depth along each ray, and spread the beamlet fluence
laterally with Gaussian kernels in the isocentre plane.  Like matRad, the dose is computed
on the plan's dose grid (``plan.dose_grid_mm``, placed as pyRadPlan places it) and
interpolated trilinearly onto the CT grid.  Doses are linear in the beamlet weights, so
optimisation differentiates through them.

Modules: ``common`` (the shared set-up, rays and flows: :class:`PencilBeamModel`),
``steering`` (beamlet lattice, listed beamlets), ``dose_grid``, ``photon`` (the photon
model), ``proton`` (the proton model) and ``proton_physics`` (the proton machine).
:class:`TorchPencilBeamEngine` is the engine other code uses: it hands each plan to the model
of its modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from evaluator.dose.engines.torch_pb.common import (
    ENGINE_NAME,
    MODEL_VERSION,
    PencilBeamModel,
)
from evaluator.dose.engines.torch_pb.photon import PhotonPencilBeam
from evaluator.dose.engines.torch_pb.proton import ProtonPencilBeam
from evaluator.dose.engines.torch_pb.proton_physics import (
    PROTON_GY_PER_WEIGHT,
    proton_idd_table,
    proton_spot_sigma_mm,
)
from evaluator.dose.engines.torch_pb.steering import SpotList, steering_target, steering_target_t
from evaluator.dose.plan import Plan


class TorchPencilBeamEngine:
    """The ``torch_pb`` dose engine; ``device`` is a torch device string ("cpu", "cuda")."""

    name = ENGINE_NAME
    model_version = MODEL_VERSION

    def __init__(self, device: str = "cpu", lateral_step_mm: float | None = None) -> None:
        self.device = torch.device(device)
        self._models: dict[str, PencilBeamModel[Any]] = {
            "photon": PhotonPencilBeam(device, lateral_step_mm),
            "proton": ProtonPencilBeam(device, lateral_step_mm),
        }

    def model(self, plan: Plan) -> PencilBeamModel[Any]:
        """The pencil-beam model of the plan's modality (a Plan's modality is validated)."""
        return self._models[plan.modality]

    def compute(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        planning_ct_hu: np.ndarray | None = None,
    ) -> np.ndarray:
        return self.model(plan).compute(ct_hu, spacing, plan, labels, planning_ct_hu)

    def optimize(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        iterations: int | None = None,
    ) -> list[float]:
        """Beamlet weights delivering the prescription (see :meth:`PencilBeamModel.optimize`)."""
        return self.model(plan).optimize(ct_hu, spacing, plan, labels, iterations)

    def beamlets(
        self, planning_ct: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> list[dict[str, list[float]]]:
        """The engine's own steering as the plan's ``beamlets`` list (in weight order)."""
        return self.model(plan).beamlets(planning_ct, spacing, plan, labels)

    def compute_spots(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        spots: Sequence[SpotList], weights: Sequence[Sequence[float]],
    ) -> np.ndarray:
        """Dose of explicitly given beamlets (per beam: SpotList and one weight per spot)."""
        return self.model(plan).compute_spots(ct_hu, spacing, plan, labels, spots, weights)


__all__ = [
    "PROTON_GY_PER_WEIGHT", "PencilBeamModel", "PhotonPencilBeam", "ProtonPencilBeam",
    "SpotList", "TorchPencilBeamEngine", "proton_idd_table", "proton_spot_sigma_mm",
    "steering_target", "steering_target_t",
]
