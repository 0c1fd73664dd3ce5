"""The eval worker's scoring step: a failing segmentation never loses a case's image and dose
metrics (the case keeps them; geometry is missing with its reason)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluator.dose.plan import PLAN_FILE
from evaluator.io import read_volume, write_volume


@pytest.mark.parametrize("weights", ["missing", "broken"])
def test_failing_segmentation_keeps_image_and_dose_metrics(
        case_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: str) -> None:
    pytest.importorskip("backend.config")  # the worker's side (the GPU box has no backend)
    from backend.config import settings
    from backend.submissions.pipeline import Evaluation
    from tests.helpers.totalseg_model import make_totalseg_weights
    from worker import steps

    weights_dir = None
    if weights == "broken":  # a real fault: nnU-Net cannot load a truncated checkpoint
        weights_dir = make_totalseg_weights(tmp_path / "ts")
        checkpoint = next(weights_dir.rglob("checkpoint_final.pth"))
        checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    monkeypatch.setattr(settings, "data_dir", tmp_path)
    monkeypatch.setattr(settings, "totalseg_weights_dir", weights_dir)
    ct = read_volume(case_dir / "ct.mha")
    write_volume(tmp_path / "mask.mha", (ct.array > -500).astype(np.uint8), like=ct)
    write_volume(tmp_path / "sct.mha", np.where(ct.array > -500, ct.array + 30, ct.array),
                 like=ct)
    job = Evaluation(
        case_run_id=1, submission_id=1, case_id=1, case_name="1ABA001", region="Abdomen",
        profile="synthrad2025", prediction_path="sct.mha",
        ground_truth_path=f"{case_dir.name}/ct.mha", mask_path="mask.mha", labels_path=None,
        plan_path=f"{case_dir.name}/{PLAN_FILE['photon']}")
    metrics = steps._score(job)
    reason = metrics.pop("geometry_error")
    assert reason.startswith("Geometry metrics (totalsegmentator) not computed")
    if weights == "missing":
        assert "SYNTHARENA_TOTALSEG_WEIGHTS_DIR" in reason
    assert "dice" not in metrics and "hd95" not in metrics
    assert {"mae", "psnr", "ms_ssim", "mae_target_photon", "gamma_photon"} <= set(metrics)
    assert metrics["mae"] > 0 and 0 <= metrics["gamma_photon"] <= 100
