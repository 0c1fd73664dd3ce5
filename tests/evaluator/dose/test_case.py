from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluator.cli import main
from evaluator.dose import DoseMetricsError, dose_metrics_for_case, dose_metrics_report
from evaluator.dose.plan import PLAN_FILE, load_plan, save_plan

from .conftest import phantom, write_image

KEYS = {f"{m}_{mod}" for m in ("mae_target", "dvh", "gamma") for mod in ("photon", "proton")}


def write_sct(case: Path, delta_hu: float) -> Path:
    hu, _ = phantom()
    sct = np.where(hu > -500, hu + delta_hu, hu).astype(np.int16)
    write_image(case.parent / "sct.mha", sct)
    return case.parent / "sct.mha"


def test_metrics_and_cache(case_dir: Path, tmp_path: Path) -> None:
    sct = write_sct(case_dir, 40.0)
    cache = tmp_path / "cache"
    first = dose_metrics_report(case_dir, sct, cache_dir=cache)
    assert set(first.metrics) == KEYS
    assert first.cached == {"photon": False, "proton": False}
    assert first.gamma_settings == {"dose_pct": 2.0, "dta_mm": 2.0, "cutoff_pct": 2.0,
                                    "interp_fraction": 0, "local": False}
    second = dose_metrics_report(case_dir, sct, cache_dir=cache)
    assert second.cached == {"photon": True, "proton": True}
    assert second.metrics == first.metrics
    m = first.metrics
    assert 0 < m["mae_target_photon"] < m["mae_target_proton"]
    assert 0 <= m["gamma_proton"] <= 100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_case_metrics_on_cuda_equal_cpu(case_dir: Path) -> None:
    """An eval worker with SYNTHARENA_EVAL_DEVICE=cuda scores like a CPU one."""
    sct = write_sct(case_dir, 40.0)
    cpu = dose_metrics_for_case(case_dir, sct, device="cpu")
    gpu = dose_metrics_for_case(case_dir, sct, device="cuda")
    assert set(gpu) == KEYS
    for key in KEYS:
        assert gpu[key] == pytest.approx(cpu[key], rel=0.02, abs=0.2 if "gamma" in key else 1e-4)


def test_cached_ct_dose_of_an_older_engine_model_is_not_reused(
    case_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evaluator.dose.engines.torch_pb import TorchPencilBeamEngine

    sct = write_sct(case_dir, 40.0)
    cache = tmp_path / "cache"
    assert dose_metrics_report(case_dir, sct, cache_dir=cache).cached["photon"] is False
    assert dose_metrics_report(case_dir, sct, cache_dir=cache).cached["photon"] is True
    monkeypatch.setattr(TorchPencilBeamEngine, "model_version", "next")
    assert dose_metrics_report(case_dir, sct, cache_dir=cache).cached == {
        "photon": False, "proton": False}


def test_perfect_sct(case_dir: Path) -> None:
    m = dose_metrics_for_case(case_dir, case_dir / "ct.mha")
    assert m["gamma_photon"] == 100.0 and m["mae_target_proton"] == 0.0
    assert m["dvh_photon"] == 0.0


def test_case_without_plans_has_no_dose_metrics(case_dir: Path) -> None:
    for f in PLAN_FILE.values():
        (case_dir / f).unlink()
    assert dose_metrics_for_case(case_dir, case_dir / "ct.mha") == {}


def test_only_one_modality(case_dir: Path) -> None:
    (case_dir / PLAN_FILE["proton"]).unlink()
    assert set(dose_metrics_for_case(case_dir, case_dir / "ct.mha")) == {
        "mae_target_photon", "dvh_photon", "gamma_photon"}


def test_missing_structure_is_a_clear_error(case_dir: Path) -> None:
    plan = load_plan(case_dir / PLAN_FILE["photon"])
    plan.structures["OAR_A"] = 9
    save_plan(plan, case_dir / PLAN_FILE["photon"])
    with pytest.raises(DoseMetricsError, match=r"1BA001, photon plan: structure 'OAR_A'"):
        dose_metrics_for_case(case_dir, case_dir / "ct.mha")


def test_bad_sct_is_a_clear_error(case_dir: Path, tmp_path: Path) -> None:
    hu, _ = phantom()
    write_image(tmp_path / "small.mha", hu[:-2].astype(np.int16))
    with pytest.raises(DoseMetricsError, match="differs from the CT grid"):
        dose_metrics_for_case(case_dir, tmp_path / "small.mha")
    with pytest.raises(DoseMetricsError, match="does not exist"):
        dose_metrics_for_case(case_dir, tmp_path / "missing.mha")


def test_missing_weights_are_optimised_on_the_ct(case_dir: Path) -> None:
    plan = load_plan(case_dir / PLAN_FILE["photon"])
    plan.weights.clear()
    save_plan(plan, case_dir / PLAN_FILE["photon"])
    (case_dir / PLAN_FILE["proton"]).unlink()
    m = dose_metrics_for_case(case_dir, case_dir / "ct.mha")
    assert m["gamma_photon"] == 100.0


def test_stale_weights_are_reoptimised_with_a_warning(
    case_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Weights that do not fit the engine's layout (a plan optimised by an older engine
    version) are re-optimised on the CT (deterministically) instead of failing the case."""
    (case_dir / PLAN_FILE["proton"]).unlink()
    sct = write_sct(case_dir, 40.0)
    fresh = dose_metrics_for_case(case_dir, sct)
    plan = load_plan(case_dir / PLAN_FILE["photon"])
    plan.weights["torch_pb"] = plan.weights["torch_pb"][:-3]
    save_plan(plan, case_dir / PLAN_FILE["photon"])
    with caplog.at_level("WARNING"):
        stale = dose_metrics_for_case(case_dir, sct)
    assert "optimising on the CT now" in caplog.text
    assert set(stale) == {k for k in KEYS if k.endswith("photon")}
    # a fully optimised plan (the fixture's ran 80 iterations): similar MAE dose, same again
    assert stale["mae_target_photon"] == pytest.approx(fresh["mae_target_photon"], rel=0.1)
    assert dose_metrics_for_case(case_dir, sct) == stale


def test_derived_weights_are_optimised_once_per_case(
    case_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a cache (the worker's), a plan without usable weights is optimised on the first
    submission's evaluation only; later ones reuse those weights."""
    (case_dir / PLAN_FILE["proton"]).unlink()
    plan = load_plan(case_dir / PLAN_FILE["photon"])
    plan.weights.clear()
    save_plan(plan, case_dir / PLAN_FILE["photon"])
    cache = tmp_path / "cache"
    with caplog.at_level("INFO"):
        first = dose_metrics_for_case(case_dir, write_sct(case_dir, 40.0), cache_dir=cache)
    assert "no torch_pb weights; optimising on the CT now" in caplog.text
    assert len(list(cache.glob("*.weights.json"))) == 1
    caplog.clear()
    with caplog.at_level("INFO"):
        again = dose_metrics_for_case(case_dir, write_sct(case_dir, 40.0), cache_dir=cache)
    assert "optimising on the CT now" not in caplog.text
    assert "using the weights optimised earlier" in caplog.text
    assert again == first
    # a damaged weights file is not trusted: optimised again, same result
    next(cache.glob("*.weights.json")).write_text("[1.0, ")
    caplog.clear()
    with caplog.at_level("INFO"):
        assert dose_metrics_for_case(case_dir, write_sct(case_dir, 40.0), cache_dir=cache) == first
    assert "unreadable" in caplog.text


def test_cli(case_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sct = write_sct(case_dir, -30.0)
    assert main(["dose-metrics", "--case", str(case_dir), "--sct", str(sct)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= KEYS and out["engine"] == "torch_pb"
    assert out["gamma_settings"]["dta_mm"] == 2.0
    shutil.rmtree(case_dir)
    case_dir.mkdir()
    (case_dir / PLAN_FILE["photon"]).write_text("{}")
    assert main(["dose-metrics", "--case", str(case_dir), "--sct", str(sct)]) == 2
    assert "photon plan" in capsys.readouterr().err
