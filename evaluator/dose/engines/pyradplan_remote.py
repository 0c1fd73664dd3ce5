"""pyRadPlan in its own virtualenv: the reference engine's calls, run as a subprocess.

pyRadPlan 0.5.0 pins pydantic and pulls ~100 packages (LLM clients among them) and older
numpy/typer/packaging; installed beside the platform it would change what the platform
imports.  So it lives in its own environment::

    python3 -m venv .venv-pyradplan
    .venv-pyradplan/bin/pip install -r evaluator/dose/pyradplan-requirements.txt

and :class:`~evaluator.dose.engines.pyradplan.PyRadPlanEngine`, where pyRadPlan cannot be
imported, sends each call here: the arguments as ``.npy`` arrays and a JSON file in a
temporary folder, ``<venv python> -m evaluator.dose.engines.pyradplan_remote DIR`` runs the
same adapter there (the repository on its ``PYTHONPATH``), the result comes back as files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.dose.engines.base import DoseComputationError, StaleWeightsError
from evaluator.dose.plan import Plan, PlanError

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_PYTHON = ROOT / ".venv-pyradplan" / "bin" / "python"
INSTALL_HINT = ("pyRadPlan runs in its own virtualenv: python3 -m venv .venv-pyradplan && "
                ".venv-pyradplan/bin/pip install -r evaluator/dose/pyradplan-requirements.txt "
                "(in the repository root)")
_ERRORS: dict[str, type[Exception]] = {
    "DoseComputationError": DoseComputationError, "StaleWeightsError": StaleWeightsError,
    "PlanError": PlanError,
}
_python: Path | None = None  # set_reference_python(); else DEFAULT_PYTHON where it exists
TIMEOUT_S = 6 * 3600


def set_reference_python(path: str | Path | None) -> None:
    """Use this interpreter (a virtualenv's ``bin/python`` with pyRadPlan) for the reference."""
    global _python
    _python = Path(path) if path is not None else None


def reference_python() -> Path | None:
    """The interpreter of pyRadPlan's own environment, or None where there is none."""
    path = _python or DEFAULT_PYTHON
    return path if path.is_file() else None


def call(method: str, arrays: dict[str, np.ndarray], plan: Plan | None = None,
         spacing: Sequence[float] = ()) -> Any:
    """Run ``PyRadPlanEngine().<method>`` in the reference environment; its result."""
    python = reference_python()
    if python is None:
        raise DoseComputationError(f"the pyradplan engine is not installed. {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="pyradplan-") as tmp:
        d = Path(tmp)
        for name, array in arrays.items():
            np.save(d / f"{name}.npy", np.asarray(array))
        (d / "call.json").write_text(json.dumps({
            "method": method, "spacing": [float(s) for s in spacing],
            "plan": plan.to_dict() if plan is not None else None}))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([str(python), "-m", __name__, str(d)], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        if (d / "error.json").is_file():
            err = json.loads((d / "error.json").read_text())
            raise _ERRORS.get(err["type"], DoseComputationError)(err["message"])
        if done.returncode != 0:
            raise DoseComputationError(
                f"the pyRadPlan environment ({python}) failed: {done.stderr.strip()[-800:]}")
        if (d / "result.npy").is_file():
            return np.load(d / "result.npy")
        return json.loads((d / "result.json").read_text())


def _serve(d: Path) -> None:
    """In the reference environment: run the call described in ``d``, write its result."""
    from evaluator.dose.engines.pyradplan import PyRadPlanEngine

    spec = json.loads((d / "call.json").read_text())
    arrays = {p.stem: np.load(p) for p in d.glob("*.npy")}
    method, spacing = spec["method"], tuple(spec["spacing"])
    plan = Plan.from_dict(spec["plan"]) if spec["plan"] is not None else None
    engine = PyRadPlanEngine()
    result: Any
    if method == "ranges_mm":
        np.save(d / "result.npy", PyRadPlanEngine.ranges_mm(arrays["energies"]))
        return
    assert plan is not None
    ct, labels = arrays["ct"], arrays["labels"]
    if method == "compute":
        weights = arrays.get("weights")
        result = engine.compute(ct, spacing, plan, labels, arrays.get("planning"),
                                None if weights is None else weights.tolist())
        np.save(d / "result.npy", result)
        return
    if method == "optimize":
        result = engine.optimize(ct, spacing, plan, labels)
    elif method == "plan_with_beamlets":
        result = engine.plan_with_beamlets(ct, spacing, plan, labels).to_dict()
    elif method == "spots":
        result = [{k: v.tolist() for k, v in beam.items()}
                  for beam in engine.spots(ct, spacing, plan, labels)]
    else:
        raise DoseComputationError(f"unknown pyradplan call {method!r}")
    (d / "result.json").write_text(json.dumps(result))


def main(argv: Sequence[str] | None = None) -> int:
    d = Path((argv if argv is not None else sys.argv[1:])[0])
    try:
        _serve(d)
    except tuple(_ERRORS.values()) as exc:
        (d / "error.json").write_text(json.dumps({"type": type(exc).__name__,
                                                  "message": str(exc)}))
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
