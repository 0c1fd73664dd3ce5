"""The shipped baseline (examples/algorithms/python), without Docker: fitted as build.sh fits
it, on training phantoms, it beats every trivial output on a held-out phantom case of every
region and task the generator offers, on every image metric."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluator.image_metrics import compute_image_metrics
from evaluator.io import read_volume
from evaluator.metrics import METRICS
from evaluator.phantoms import REGIONS, generate_dataset

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "algorithms" / "python"
sys.path.insert(0, str(EXAMPLE))
import baseline  # noqa: E402
import fit  # noqa: E402


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    return fit.fit(cases=2, seed=90210, size="small")


@pytest.mark.parametrize("task", fit.tasks())
@pytest.mark.parametrize("anatomy", list(REGIONS))
def test_baseline_beats_trivial_outputs(model: dict[str, Any], tmp_path: Path, anatomy: str,
                                        task: str) -> None:
    extra = {"task": task} if task != "mri" else {}
    [case] = generate_dataset(tmp_path, anatomy, 1, seed=3, **extra)
    modality, region, *_ = fit.samples(case)
    image_path = next(case / f"{s}.mha" for s in fit.INPUT_STEMS if (case / f"{s}.mha").exists())
    image, mask = read_volume(image_path), read_volume(case / "mask.mha")
    ct = read_volume(case / "ct.mha").array.astype(np.float32)
    predicted = baseline.predict(model, modality, json.loads((case / "region.json").read_text()),
                                 image.array, mask.array, image.spacing)
    trivial = {"zeros": np.zeros_like(ct), "copy": image.array.astype(np.float32),
               "soft-tissue": np.full_like(ct, 40.0)}
    mine = compute_image_metrics(ct, predicted, mask.array, "synthrad2025")
    for name, sct in trivial.items():
        theirs = compute_image_metrics(ct, sct, mask.array, "synthrad2025")
        for metric, value in mine.items():
            better = value > theirs[metric] if METRICS[metric].higher_is_better \
                else value < theirs[metric]
            assert better, (anatomy, task, region, name, metric, value, theirs[metric])


def test_an_unknown_region_uses_the_pooled_table(model: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    image, mask = rng.random((6, 8, 8)).astype(np.float32), np.ones((6, 8, 8), np.uint8)
    pooled = baseline.predict(model, "mri", "Somewhere else", image, mask, (1.0, 1.0, 1.0))
    assert pooled.shape == image.shape and np.isfinite(pooled).all()
    with pytest.raises(ValueError, match="no table for xray inputs"):
        baseline.predict(model, "xray", "Brain", image, mask, (1.0, 1.0, 1.0))
