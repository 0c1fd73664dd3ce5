"""SynthRAD2025 geometry through the real pipeline (Celery worker process, Redis, PostgreSQL,
Docker) on head-and-neck, thorax and abdomen CBCT cases: phantoms in the SynthRAD2025 layout
(each folder holds the phantoms' 3-class ``labels.mha`` and a TotalSegmentator-labelled
``segmentation.mha``) -> the importer (a queued import job) -> a phase with the official
``synthrad2025`` profile -> the example Python algorithm -> Dice/HD95 from the production
TotalSegmentator path (nnU-Net v2 loading and inference) with a small model the test writes in
the published weights' folder layout (the real weights cannot be downloaded here).

The worker's values must be what the evaluator computes directly against the dataset's
``segmentation.mha`` with the same model: the ground truth is the TotalSegmentator map, never
the phantoms' 3-class map stored beside it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.db import session_scope
from backend.models import (
    Case,
    CaseRun,
    Result,
    SubmissionStatus,
)
from evaluator.scoring import score_case
from evaluator.segmentation.official import BRAIN, HEART, LIVER, SPINAL_CORD, VERTEBRAE
from tests.e2e.test_cbct_regions import import_folder
from tests.helpers.totalseg_model import make_totalseg_weights
from tests.worker import harness
from tests.worker.conftest import (  # noqa: F401  (fixtures)
    clean_pipeline,
    docker_engine,
    pipeline_env,
    python_image,
    static_images,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REGIONS = ("head_neck", "thorax", "abdomen")
# Structures the phantoms draw: the tiny model predicts only these, so Dice varies with the
# image and is scored on structures of every region's list.
FAVOURED = (SPINAL_CORD, LIVER, HEART, BRAIN, VERTEBRAE[5], VERTEBRAE[15])


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_totalseg_weights(tmp_path_factory.mktemp("totalseg"), seed=3,
                                 favoured=FAVOURED)


@pytest.fixture(scope="module")
def worker_proc(pipeline_env, python_image, weights):  # noqa: F811
    env = {**pipeline_env.env(), "SYNTHARENA_TOTALSEG_WEIGHTS_DIR": str(weights)}
    proc = harness.start_worker(pipeline_env, "e2e-totalseg", concurrency=2, env=env)
    yield proc
    harness.stop_worker(proc)


def _write_cases(root: Path) -> None:
    from evaluator.cli import main

    for region in REGIONS:
        assert main(["phantom", "--region", region, "--task", "cbct", "--synthrad-layout",
                     "--cases", "1", "--seed", "31", "--out", str(root)]) == 0


def test_synthrad2025_geometry_on_cbct_regions(clean_pipeline, worker_proc,  # noqa: F811
                                               weights: Path) -> None:
    data_dir = clean_pipeline.data_dir
    src = data_dir / "synthrad2025-totalseg"
    _write_cases(src)
    for folder in (src / "Task2").iterdir():
        for case in folder.iterdir():
            assert {"labels.mha", "segmentation.mha"} <= {p.name for p in case.iterdir()}
    job = import_folder(src, "ts")
    with session_scope() as s:
        cases = {c.id: (c.name, c.region, c.ground_truth_path, c.mask_path, c.labels_path)
                 for c in s.scalars(select(Case).where(
                     Case.dataset_version_id == job.dataset_version_id))}
        assert sorted(n[1:3] for n, *_ in cases.values()) == ["AB", "HN", "TH"]
        phase = harness.seed_phase(s, data_dir, slug="ts", n_cases=0, batch_size=1,
                                   memory_mb=1024, metric_profile="synthrad2025")
        phase.dataset_version_id = job.dataset_version_id
        s.flush()
        sub_id = harness.submit(s, phase, "dora", "python").id
    sub = harness.wait_done([sub_id], timeout_s=420)[sub_id]
    assert sub.status is SubmissionStatus.SUCCEEDED, sub.error_message
    with session_scope() as s:
        results = list(s.scalars(select(Result).where(Result.submission_id == sub_id)))
        predictions = {r.case_id: r.prediction_path for r in s.scalars(
            select(CaseRun).where(CaseRun.submission_id == sub_id))}
    assert len(results) == 3
    for result in results:
        name, region, ct, mask, labels = cases[result.case_id]
        m = result.metrics
        assert "geometry_error" not in m, m
        assert "dice_hu" not in m and "hd95_hu" not in m  # the official profile's columns
        assert 0.0 <= m["dice"] <= 1.0 and math.isfinite(m["hd95"]) and m["hd95"] >= 0, m
        # The case's label map is the phantoms' (labels.mha); the TotalSegmentator one lies
        # beside it and is the one compared with.
        assert labels is not None and labels.endswith("labels.mha")
        gt = data_dir / Path(ct).parent
        direct = score_case(data_dir / ct, data_dir / predictions[result.case_id],
                            data_dir / mask, "synthrad2025",
                            labels_path=gt / "segmentation.mha", region=region,
                            case_name=name, weights_dir=weights)
        assert m["dice"] == pytest.approx(direct["dice"], abs=1e-6), name
        assert m["hd95"] == pytest.approx(direct["hd95"], abs=1e-4), name
    # The model finds some of each region's structures on the sCT: Dice is not 0 everywhere.
    assert max(r.metrics["dice"] for r in results) > 0
