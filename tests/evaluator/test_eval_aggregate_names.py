"""score-dir's official aggregate names: the statistics SynthRAD's evaluation writes (its
evaluate.py computes them with numpy), under its names, beside its 'results' list."""

from __future__ import annotations

import json

import numpy as np
import pytest

import evaluator.cli as cli
from evaluator.aggregation import aggregate, named_statistics
from tests.evaluator.test_eval_scoring_cli import make_predictions

# The official aggregate functions (SynthRAD2025/evaluation evaluate.py:145-179).
OFFICIAL = {"mean": np.mean, "max": np.max, "min": np.min, "std": np.std,
            "25pc": lambda v: np.quantile(v, 0.25), "50pc": lambda v: np.quantile(v, 0.5),
            "75pc": lambda v: np.quantile(v, 0.75), "count": len}


def test_score_dir_writes_the_official_aggregates(phantom_dir, tmp_path):
    pred = make_predictions(phantom_dir, tmp_path / "pred")
    out = tmp_path / "metrics.json"
    assert cli.main(["score-dir", "--gt", str(phantom_dir), "--pred", str(pred), "--profile",
                     "synthrad2025", "--out", str(out), "--no-progress",
                     "--aggregate-names", "synthrad"]) == 0
    data = json.loads(out.read_text())
    assert data["results"] == [data["cases"][c] for c in sorted(data["cases"])]
    assert {"mae", "psnr", "ms_ssim"} <= set(data["aggregates"])
    for metric in data["aggregates"]:
        values = [r[metric] for r in data["results"]]
        stats = data["aggregates"][metric]
        assert list(stats) == list(OFFICIAL)  # the official names, in its order
        for name, fn in OFFICIAL.items():
            assert stats[name] == pytest.approx(float(fn(values)), rel=1e-12), (metric, name)


def test_named_statistics_keeps_the_numbers():
    stats = aggregate([3.0, 1.0, 2.0, 10.0])
    assert named_statistics(stats) == stats
    official = named_statistics(stats, "synthrad")
    assert (official["50pc"], official["25pc"], official["75pc"]) == \
        (stats["median"], stats["p25"], stats["p75"])
    with pytest.raises(ValueError, match="unknown aggregate naming"):
        named_statistics(stats, "gc")
