"""benchmarks/dose.py runs on given case folders and seeds (not only its own seed-0 case)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "dose.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_runs_on_case_folders(case_dir: Path) -> None:
    """--cases DIR: every case folder under DIR, both of its plans, at the thread count asked."""
    out = _run("--cases", str(case_dir.parent), "--recompute-only", "--threads", "1")
    assert out.returncode == 0, out.stderr
    assert f"[dose] {case_dir.name} " in out.stdout
    assert "torch threads 1" in out.stdout
    for modality in ("photon", "proton"):
        assert f"  {modality} ours       optimise" in out.stdout


def test_empty_case_folder_says_what_is_missing(tmp_path: Path) -> None:
    out = _run("--cases", str(tmp_path), "--recompute-only")
    assert out.returncode != 0
    assert "no case folders" in out.stderr and "python -m evaluator phantom" in out.stderr


def test_seed_and_layout_pick_the_phantom() -> None:
    from benchmarks.dose import phantom

    a = phantom("pelvis", "small", seed=2, vary_layout=True)
    b = phantom("pelvis", "small", seed=2)
    assert a["name"] == "pelvis small seed 2"
    assert not (a["structures"] == b["structures"]).all()
    assert a["plans"]["proton"].beams[0].gantry_deg != b["plans"]["proton"].beams[0].gantry_deg
