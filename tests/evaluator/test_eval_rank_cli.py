"""``python -m evaluator rank``: the contract of issue 14 (JSON ranks, input errors exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluator.cli import main

TABLE = """team,affiliation,mae,psnr,ms_ssim
a,Utrecht,50,30,0.90
b,Lund,60,inf,0.95
c,Utrecht,50,30,0.90
d,Nijmegen,,29,0.80
e,Delft,70,nan,0.70
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "table.csv"
    path.write_text(text)
    return path


def run(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["rank", "--table", str(path), "--id-column", "team", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("method", ["absolute", "mean_rank", "median_rank", "normalized_sum",
                                    "grouped_normalized_sum"])
def test_every_method_prints_json_ranks_with_null_for_unrankable_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str
):
    code, out, err = run(capsys, write(tmp_path, TABLE), "--method", method)
    assert code == 0
    ranks = json.loads(out)
    assert set(ranks) == {"a", "b", "c", "d", "e"}
    assert ranks["d"] is None  # empty mae
    # NaN psnr: unrankable unless only mae (the first metric) is ranked
    assert ranks["e"] == (4 if method == "absolute" else None)
    assert ranks["a"] == ranks["c"]  # identical rows share a rank
    assert "affiliation" in err and "ignored" in err
    unranked = [t for t, r in ranks.items() if r is None]
    assert list(ranks)[-len(unranked):] == unranked  # printed after every ranked row


def test_absolute_ties_share_a_rank_1_1_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(capsys, write(tmp_path, TABLE), "--method", "absolute")
    assert code == 0
    assert json.loads(out) == {"a": 1, "c": 1, "b": 3, "e": 4, "d": None}


def test_inf_psnr_is_the_best_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(capsys, write(tmp_path, TABLE), "--method", "absolute",
                       "--metric", "psnr")
    assert code == 0
    assert json.loads(out)["b"] == 1


def test_mean_rank_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # Complete rows a, b, c: mae ranks 1,3,1; psnr 2,1,2; ms_ssim 2,1,2 -> means 5/3, 5/3, 5/3.
    code, out, _ = run(capsys, write(tmp_path, TABLE), "--method", "mean_rank")
    assert code == 0
    assert json.loads(out) == {"a": 1, "b": 1, "c": 1, "d": None, "e": None}


def test_groups_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # Put mae alone in a group: it weighs as much as psnr and ms_ssim together; a and c win it.
    groups = json.dumps({"error": ["mae"], "similarity": ["psnr", "ms_ssim"]})
    code, out, _ = run(capsys, write(tmp_path, TABLE), "--method", "grouped_normalized_sum",
                       "--groups", groups)
    assert code == 0
    ranks = json.loads(out)
    # a, c: mae 1, psnr 0 (inf is 1, finite best=worst -> 0.5), ms_ssim 0 -> (1 + 0.25) / 2
    # b: mae 0, psnr 1, ms_ssim 1 -> (0 + 1) / 2
    assert ranks == {"a": 1, "c": 1, "b": 3, "d": None, "e": None}


@pytest.mark.parametrize(
    ("text", "args", "needle"),
    [
        ("team,mae,score\na,1,2\n", [], "score"),  # unknown numeric column
        ("team,mae\na,1\na,2\n", [], "twice"),  # duplicate id
        ("team,mae\na,1\n", ["--lower-is-better", "dose"], "dose"),  # declared, absent
        ("team,psnr\na,1\n", ["--lower-is-better", "psnr"], "cannot be inverted"),
        ("team,mae\na,abc\n", [], "abc"),  # not a number
        ("name,mae\na,1\n", [], "team"),  # no id column
        ("team,mae\na,1\n", ["--groups", "[1]"], "--groups"),
        ("team,mae,psnr\na,1,2\n", ["--groups", '{"g": ["mae"]}'], "psnr"),  # ungrouped
    ],
)
def test_input_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, args: list[str], needle: str
):
    method = "grouped_normalized_sum" if "--groups" in args else "mean_rank"
    code, out, err = run(capsys, write(tmp_path, text), "--method", method, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert needle in err


def test_declared_custom_metric_is_ranked(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    text = "team,score\na,1\nb,3\nc,2\n"
    code, out, _ = run(capsys, write(tmp_path, text), "--method", "absolute",
                       "--higher-is-better", "score")
    assert code == 0
    assert json.loads(out) == {"b": 1, "c": 2, "a": 3}
