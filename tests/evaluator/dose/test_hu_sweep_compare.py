"""benchmarks/hu_sweep.py --compare redoes ours vs stored pyRadPlan values on any stored case
(rebuilt from what it stored), not only the test's; no pyRadPlan needed."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.hu_sweep import (
    REFERENCE,
    case_descriptor,
    compare_stored,
    markdown,
    phantom_case,
    read_json,
    write_json,
)

ROOT = Path(__file__).resolve().parents[3]


def _stored_entry(keep: tuple[str, ...] = ("soft+30", "noise40")) -> dict[str, Any]:
    """The test reference's small brain, proton only, two perturbations (a few seconds)."""
    entry = copy.deepcopy(read_json(REFERENCE)["cases"]["brain-small-0"])
    proton = entry["proton"]
    proton["pyradplan"] = {k: proton["pyradplan"][k] for k in keep}
    return {"fingerprint": entry["fingerprint"], "proton": proton}


def test_descriptor_rebuilds_the_case() -> None:
    """What --save stores makes the same phantom again; the test's names parse too."""
    case = phantom_case("pelvis", "small", seed=3, vary_layout=True)
    stored = case_descriptor(case["name"], {"case": case["descriptor"]})
    assert stored == {"anatomy": "pelvis", "size": "small", "seed": 3, "vary_layout": True}
    assert stored is not None
    again = phantom_case(**stored)
    assert again["name"] == "pelvis-small-3-varied"
    assert (again["ct"] == case["ct"]).all() and (again["structures"] == case["structures"]).all()
    assert case_descriptor("pelvis-small-3-varied", {}) == stored
    assert case_descriptor("brain-medium-0", {})["vary_layout"] is False  # type: ignore[index]
    assert case_descriptor("slab", {}) is None
    with pytest.raises(ValueError, match="--save"):
        case_descriptor("my case", {})


def test_compare_runs_on_a_stored_case_under_any_name(tmp_path: Path) -> None:
    """A case stored under its own name with its descriptor is rebuilt and compared; one
    whose phantom the generator no longer makes is skipped, not compared wrongly."""
    entry = _stored_entry()
    stale = copy.deepcopy(entry)
    stale["fingerprint"][0] += 1.0
    path = tmp_path / "sweep.json.gz"
    descriptor = {"anatomy": "brain", "size": "small", "seed": 0, "vary_layout": False}
    write_json(path, {"cases": {"mine": {**entry, "case": descriptor},
                                "stale": {**stale, "case": descriptor}}})
    results = compare_stored(path)
    assert [(r[0], r[1]) for r in results] == [("mine", "proton")]
    _, _, theirs, mine, t_ours, t_ref = results[0]
    assert set(mine) == set(theirs) == {"soft+30", "noise40"}
    for name in theirs:  # the same plan on the same case: close to pyRadPlan's values
        assert abs(mine[name]["mae_target"] / theirs[name]["mae_target"] - 1) < 0.1
        assert abs(mine[name]["gamma"] - theirs[name]["gamma"]) < 1.0
    assert t_ours > 0 and t_ref is None
    md = markdown(results)
    assert "| mine | proton | MAE rel diff " in md and "| mine | proton | soft+30 |" in md
    assert "(soft-tissue bias " in md  # the systematic bias apart from noise's tiny MAE
    assert all(line.count("|") in (6, 10) for line in md.splitlines() if line)


def test_cli_compare_without_stored_values_says_what_to_do(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hu_sweep.py"), "--compare",
                          "--reference", str(tmp_path / "none.json.gz")],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--save" in out.stderr
