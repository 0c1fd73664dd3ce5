"""The ``rank`` CLI against a real published leaderboard (see data/README.md for the source)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluator.cli import main

DATA = Path(__file__).parent / "data"
TUSREC = DATA / "tusrec2024_final_leaderboard.csv"
ROOT = Path(__file__).resolve().parents[2]
SCORES = ["final_score", "global_score", "local_score", "pixel_score", "landmark_score"]
ERRORS = ["gpe", "gle", "lpe", "lle"]


def published(path: Path) -> dict[str, int]:
    with path.open() as f:
        return {r["team"]: int(r["published_rank"]) for r in csv.DictReader(f)}


def rank(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, int | None]:
    code = main(["rank", "--table", str(TUSREC), "--id-column", "team", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    result: dict[str, int | None] = json.loads(out)
    return result


def test_normalized_sum_of_mean_errors_reproduces_tusrec2024(capsys: pytest.CaptureFixture[str]):
    got = rank(capsys, "--method", "normalized_sum", "--lower-is-better", *ERRORS,
               "--ignore-column", "published_rank", "runtime_s", *SCORES)
    assert got == published(TUSREC)
    assert list(got) == sorted(got, key=lambda t: published(TUSREC)[t])  # printed best first


def test_absolute_on_the_published_final_score_reproduces_tusrec2024(
    capsys: pytest.CaptureFixture[str],
):
    got = rank(capsys, "--method", "absolute", "--metric", "final_score",
               "--higher-is-better", *SCORES, "--lower-is-better", *ERRORS,
               "--ignore-column", "published_rank", "runtime_s")
    assert got == published(TUSREC)


def test_mean_rank_does_not_reproduce_tusrec2024_the_top_three_tie(
    capsys: pytest.CaptureFixture[str],
):
    # ZJR wins both global errors, MUSIC Lab both local ones: each of the three has mean rank 2.
    got = rank(capsys, "--method", "mean_rank", "--lower-is-better", *ERRORS,
               "--ignore-column", "published_rank", "runtime_s", *SCORES)
    assert [got[t] for t in ("MUSIC Lab", "ISRU-DKFZ", "ZJR")] == [1, 1, 1]
    assert got["AMI-Lab"] == 4 == published(TUSREC)["AMI-Lab"]


def test_cli_subprocess_contract_on_the_published_table():
    cmd = [sys.executable, "-m", "evaluator", "rank", "--table", str(TUSREC),
           "--id-column", "team", "--method", "normalized_sum",
           "--lower-is-better", *ERRORS, "--ignore-column", "published_rank", "runtime_s"]
    # The five score columns hold numbers but are no registry metric: an input error.
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "final_score" in bad.stderr and "--higher-is-better" in bad.stderr
    ok = subprocess.run([*cmd, *SCORES], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == published(TUSREC)
