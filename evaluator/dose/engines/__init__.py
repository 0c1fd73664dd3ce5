"""Dose engines: the own torch pencil beam (``torch_pb``) and pyRadPlan (``pyradplan``)."""

from __future__ import annotations

from evaluator.dose.engines.base import DoseComputationError, DoseEngine, StaleWeightsError
from evaluator.dose.engines.torch_pb import TorchPencilBeamEngine

ENGINES = ("torch_pb", "pyradplan")
DEFAULT_ENGINE = "torch_pb"


def get_engine(name: str, device: str = "cpu") -> DoseEngine:
    if name == "torch_pb":
        return TorchPencilBeamEngine(device=device)
    if name == "pyradplan":
        from evaluator.dose.engines.pyradplan import PyRadPlanEngine

        return PyRadPlanEngine()
    raise DoseComputationError(f"unknown dose engine {name!r} (known: {', '.join(ENGINES)})")


__all__ = [
    "DEFAULT_ENGINE", "ENGINES", "DoseComputationError", "DoseEngine", "StaleWeightsError",
    "get_engine",
]
