"""A case with real photon and proton plans (the dose tests' small phantom, 36³ at 4 mm) for
the dose-view tests, scored through the worker's dose step so that its products are stored
the way a real evaluation stores them."""

from __future__ import annotations

import contextlib
import copy
import functools
from pathlib import Path
from typing import Any

import numpy as np

from backend.models import Case
from evaluator.dose.plan import PLAN_FILE, Plan, save_plan
from tests.evaluator.dose.conftest import SPACING, make_plan, phantom, write_image

SCT_SHIFT_HU = 60.0  # the "synthetic CT": the phantom with soft tissue and bone 60 HU denser


@functools.cache
def _plans() -> dict[str, Plan]:
    from evaluator.dose.engines.torch_pb import TorchPencilBeamEngine

    hu, labels = phantom()
    engine = TorchPencilBeamEngine()
    plans = {}
    for modality in ("photon", "proton"):
        plan = make_plan(modality)
        plan.weights["torch_pb"] = engine.optimize(hu, SPACING, plan, labels, iterations=80)
        plans[modality] = plan
    return plans


def write_case(data_dir: Path, case: Case) -> None:
    """The phantom as the case's input, mask and CT, with its structures and plans beside the
    CT (``case.plan_path`` set; the caller flushes)."""
    hu, labels = phantom()
    ct = data_dir / case.ground_truth_path
    for rel, arr in ((case.input_image_path, hu), (case.mask_path, labels > 0),
                     (case.ground_truth_path, hu)):
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_image(data_dir / rel, arr.astype(np.int16))
    write_image(ct.parent / "structures.mha", labels)
    for modality, optimised in _plans().items():
        plan = copy.deepcopy(optimised)
        plan.ct_file = ct.name
        save_plan(plan, ct.parent / PLAN_FILE[modality])
    case.plan_path = str(Path(case.ground_truth_path).parent / PLAN_FILE["photon"])


def score(data_dir: Path, case: Case, submission_id: int,
          case_run_id: int) -> tuple[str, dict[str, Any]]:
    """Write the sCT as the case's prediction and run the worker's dose step on it:
    (prediction path relative to the data dir, dose metrics)."""
    from backend.submissions.pipeline import Evaluation
    from worker.steps import score_dose

    hu, _ = phantom()
    rel = f"predictions/{submission_id}/{case.name}.mha"
    (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    write_image(data_dir / rel, np.where(hu > -500, hu + SCT_SHIFT_HU, hu).astype(np.int16))
    assert case.plan_path is not None
    job = Evaluation(case_run_id=case_run_id, submission_id=submission_id, case_id=case.id,
                     case_name=case.name, region=case.region, profile="synthrad2023",
                     prediction_path=rel,
                     ground_truth_path=case.ground_truth_path, mask_path=case.mask_path,
                     labels_path=None, plan_path=case.plan_path)
    with contextlib.ExitStack() as files:
        return rel, score_dose(job, data_dir / rel, "cpu", files)


def write_image_like_ct(data_dir: Path, rel: str) -> None:
    """The phantom CT at ``rel`` (a prediction without dose products)."""
    (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    write_image(data_dir / rel, phantom()[0].astype(np.int16))
