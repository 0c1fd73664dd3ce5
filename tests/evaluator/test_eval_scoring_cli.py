from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import evaluator.cli as cli
from evaluator.errors import EvaluationInputError
from evaluator.image_metrics import compute_image_metrics
from evaluator.io import read_volume, write_volume
from evaluator.scoring import score_case, score_dir

ROOT = Path(__file__).resolve().parents[2]


def make_predictions(phantom_dir: Path, out: Path) -> Path:
    """sCT = CT + 30 HU + a smooth error; one case in each accepted layout."""
    for i, case in enumerate(sorted(p.name for p in phantom_dir.iterdir())):
        ct = read_volume(phantom_dir / case / "ct.mha")
        sct = ct.array.astype(np.float32) + 30.0
        sct[:, :, : sct.shape[2] // 3] += 60.0
        path = out / case / "sct.mha" if i % 2 == 0 else out / f"{case}.mha"
        write_volume(path, sct, like=ct)
    return out


def test_score_case_image_and_segmentation_metrics(phantom_dir):
    case = phantom_dir / "1BA001"
    same = score_case(case / "ct.mha", case / "ct.mha", case / "mask.mha",
                      "synthrad2025-phantom", labels_path=case / "labels.mha")
    assert same["mae"] == 0.0 and same["ms_ssim"] == pytest.approx(1.0)
    assert 0.5 < same["dice_hu"] <= 1.0 and same["hd95_hu"] >= 0.0
    assert {"dice_hu_air", "dice_hu_soft_tissue", "dice_hu_bone"} <= set(same)
    other = score_case(case / "ct.mha", phantom_dir / "1BA002" / "ct.mha", case / "mask.mha",
                       "synthrad2023")
    assert set(other) == {"mae", "psnr", "ssim"}
    ct = read_volume(case / "ct.mha").array
    sct = read_volume(phantom_dir / "1BA002" / "ct.mha").array
    mask = read_volume(case / "mask.mha").array
    assert other == compute_image_metrics(ct, sct, mask, "synthrad2023")


def test_score_case_rejects_mismatching_geometry(phantom_dir):
    brain, pelvis = phantom_dir / "1BA001", phantom_dir / "1PA001"
    with pytest.raises(EvaluationInputError, match=r"sCT size .* differs from CT size .*1PA001"):
        score_case(brain / "ct.mha", pelvis / "ct.mha", brain / "mask.mha", "synthrad2023")


def test_score_dir_aggregates_and_reports_missing_cases(phantom_dir, tmp_path):
    pred = make_predictions(phantom_dir, tmp_path / "pred")
    result = score_dir(phantom_dir, pred, "synthrad2023-phantom")
    assert sorted(result["cases"]) == ["1BA001", "1BA002", "1PA001"]
    assert result["errors"] == {}
    maes = [m["mae"] for m in result["cases"].values()]
    assert result["aggregates"]["mae"]["mean"] == pytest.approx(np.mean(maes))
    assert result["aggregates"]["dice_hu"]["count"] == 3
    shutil.rmtree(pred / "1BA001")
    result = score_dir(phantom_dir, pred, "synthrad2023")
    assert "no prediction found for case 1BA001" in result["errors"]["1BA001"]
    assert result["aggregates"]["mae"]["count"] == 2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "evaluator", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_image_metrics_process(phantom_dir):
    # a one-case process: torch's values, without starting numba (its start-up costs more
    # than it saves on one case; the ahead-of-time loops are used where they are built)
    case = phantom_dir / "1BA001"
    paths = {"ct": case / "ct.mha", "sct": phantom_dir / "1BA002" / "ct.mha",
             "mask": case / "mask.mha"}
    script = ("import sys; from evaluator.cli import main; rc = main(sys.argv[1:]); "
              "print('numba started' if 'numba' in sys.modules else 'no numba', "
              "file=sys.stderr); sys.exit(rc)")
    ok = subprocess.run(
        [sys.executable, "-c", script, "image-metrics", *(f"--{k}={v}" for k, v in paths.items()),
         "--profile", "synthrad2025"], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.strip().splitlines()[-1] == "no numba"
    out = json.loads(ok.stdout)
    ct, sct, mask = (read_volume(p).array for p in paths.values())
    want = compute_image_metrics(ct, sct, mask, "synthrad2025", fused=False)
    assert {k: v.hex() for k, v in out.items()} == {k: v.hex() for k, v in want.items()}


def test_cli_in_process(phantom_dir, tmp_path, capsys):
    case = phantom_dir / "1BA001"
    assert cli.main(["image-metrics", "--ct", str(case / "ct.mha"), "--sct",
                     str(case / "ct.mha"), "--mask", str(case / "mask.mha"),
                     "--profile", "synthrad2023"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"mae": 0.0, "psnr": None, "ssim": pytest.approx(1.0)}  # inf -> null

    assert cli.main(["image-metrics", "--ct", str(tmp_path / "nope.mha"), "--sct",
                     str(case / "ct.mha"), "--mask", str(case / "mask.mha"),
                     "--profile", "synthrad2023"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.mha: file not found" in err[0]

    assert cli.main(["image-metrics", "--ct", str(case / "ct.mha"), "--sct",
                     str(phantom_dir / "1PA001" / "ct.mha"), "--mask", str(case / "mask.mha"),
                     "--profile", "synthrad2023"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "sCT size" in lines[0] and "1PA001" in lines[0]

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["image-metrics", "--ct", "a", "--sct", "b", "--mask", "c",
                  "--profile", "bogus"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_cli_score_dir_and_phantom(phantom_dir, tmp_path, capsys):
    pred = make_predictions(phantom_dir, tmp_path / "pred")
    out = tmp_path / "metrics.json"
    assert cli.main(["score-dir", "--gt", str(phantom_dir), "--pred", str(pred), "--profile",
                     "synthrad2023-phantom", "--out", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert set(data["cases"]) == {"1BA001", "1BA002", "1PA001"}
    assert {"mae", "psnr", "ssim", "dice_hu", "hd95_hu"} <= set(data["aggregates"])
    shutil.rmtree(pred / "1BA001")
    assert cli.main(["score-dir", "--gt", str(phantom_dir), "--pred", str(pred), "--profile",
                     "synthrad2023-phantom", "--out", str(out), "--no-progress",
                     "--segmenter", "none"]) == 1
    assert "1 of 3 cases could not be scored" in capsys.readouterr().err
    assert "dice_hu" not in json.loads(out.read_text())["aggregates"]
    assert cli.main(["score-dir", "--gt", str(tmp_path / "none"), "--pred", str(pred),
                     "--profile", "synthrad2025", "--out", str(out)]) == 2

    assert cli.main(["phantom", "--anatomy", "pelvis", "--cases", "1", "--seed", "2",
                     "--out", str(tmp_path / "ph")]) == 0
    listed = json.loads(capsys.readouterr().out)["cases"]
    assert listed == [str(tmp_path / "ph" / "1PA001")]
    assert (tmp_path / "ph" / "1PA001" / "labels.mha").is_file()


def test_plugin_subcommand_registration(monkeypatch, capsys):
    module = types.ModuleType("fake_dose_cli")

    def register_subcommands() -> None:
        cli.register(cli.Subcommand(
            "gamma-test", "test only",
            lambda p: p.add_argument("--x", type=int, required=True),
            lambda args: print(json.dumps({"x": args.x})) or 0,
        ))

    module.register_subcommands = register_subcommands
    monkeypatch.setitem(sys.modules, "fake_dose_cli", module)
    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("fake_dose_cli", "evaluator.not_there.cli"))
    monkeypatch.setattr(cli, "_REGISTRY", dict(cli._REGISTRY))
    assert cli.main(["gamma-test", "--x", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"x": 3}


def test_plugins_are_imported_only_when_needed(monkeypatch):
    """A built-in subcommand starts without the plugins' imports (the dose engines import
    torch); a plugin's subcommand and the overall --help still find them."""
    loaded: list[str] = []
    module = types.ModuleType("fake_plugin_cli")

    def register_subcommands() -> None:
        loaded.append("plugin")
        cli.register(cli.Subcommand("plugin-cmd", "test only", lambda p: None,
                                    lambda args: 0))

    module.register_subcommands = register_subcommands
    monkeypatch.setitem(sys.modules, "fake_plugin_cli", module)
    monkeypatch.setattr(cli, "PLUGIN_MODULES", ("fake_plugin_cli",))
    monkeypatch.setattr(cli, "_REGISTRY", dict(cli._REGISTRY))
    argv = ["image-metrics", "--ct", "a", "--sct", "b", "--mask", "c",
            "--profile", "synthrad2025"]
    args = cli.build_parser(argv).parse_args(argv)
    assert args.command == "image-metrics" and not loaded
    assert cli.main(["plugin-cmd"]) == 0 and loaded == ["plugin"]
    monkeypatch.setattr(cli, "_REGISTRY", {k: v for k, v in cli._REGISTRY.items()
                                           if k != "plugin-cmd"})
    assert "plugin-cmd" in cli.build_parser(["--help"]).format_help()
