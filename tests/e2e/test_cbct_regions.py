"""The CBCT task end to end on the real stack (Celery worker process, Redis, PostgreSQL,
Docker): phantom CBCT cases of head-and-neck, thorax and abdomen written by
``python -m evaluator phantom`` in the SynthRAD2025 layout (``Task2/<HN|TH|AB>/<case>/
cbct.mha``, no region.json: the region comes from the folder) -> the importer (a queued
import job) -> a batched phase -> the example Python algorithm -> scored case metrics.
Batches keep to one region: every container's log lists one region's cases only."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from backend.datasets import service as datasets_service
from backend.datasets.schemas import ImportIn
from backend.db import session_scope
from backend.models import (
    Case,
    CaseRun,
    Dataset,
    ImportJob,
    ImportStatus,
    Modality,
    Result,
    SubmissionStatus,
    User,
)
from tests.worker import harness
from tests.worker.conftest import (  # noqa: F401  (fixtures)
    clean_pipeline,
    docker_engine,
    pipeline_env,
    python_image,
    static_images,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]
REGIONS = {"head_neck": ("HN", "Head and Neck"), "thorax": ("TH", "Thorax"),
           "abdomen": ("AB", "Abdomen")}
# Cases in name order: 2ABA001 2ABA002 2HNA001 2THA001 2THA002 -- batches of two taken in
# that order would put 2HNA001 and 2THA001 into one container.
CASES = {"abdomen": 2, "head_neck": 1, "thorax": 2}


@pytest.fixture(scope="module")
def worker_proc(pipeline_env, python_image):  # noqa: F811
    proc = harness.start_worker(pipeline_env, "e2e", concurrency=2)
    yield proc
    harness.stop_worker(proc)


def _write_synthrad_cbct(root: Path) -> None:
    from evaluator.cli import main

    for region in REGIONS:
        assert main(["phantom", "--region", region, "--task", "cbct", "--synthrad-layout",
                     "--cases", str(CASES[region]), "--seed", "21", "--out", str(root)]) == 0
    for f in root.rglob("region.json"):  # as SynthRAD2025 ships it: the folder names it
        f.unlink()


def _wait_import(job_id: int, timeout_s: float) -> ImportJob:
    deadline = time.monotonic() + timeout_s
    while True:
        with session_scope() as s:
            job = s.get(ImportJob, job_id)
            assert job is not None
            s.expunge(job)
        if job.status not in (ImportStatus.QUEUED, ImportStatus.RUNNING):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"import {job_id}: {job.status}, {job.cases_done} cases")
        time.sleep(0.2)


def import_folder(src: Path, name: str) -> ImportJob:
    """The SynthRAD-layout folder through the importer (a queued job on the worker), as an
    admin: the finished job, checked to have succeeded."""
    with session_scope() as s:
        admin = User(email=f"{name}@example.org", username=f"{name}-admin",
                     password_hash="x", is_admin=True)
        s.add(admin)
        s.flush()
        dataset = Dataset(slug=f"{name}-regions", title=f"{name} regions",
                          created_by_id=admin.id)
        s.add(dataset)
        s.flush()
        job_id = datasets_service.start_import(
            s, admin, dataset, ImportIn(source="synthrad", path=str(src))).id
    job = _wait_import(job_id, timeout_s=240)
    assert job.status is ImportStatus.SUCCEEDED, (job.message, job.errors)
    return job


def test_cbct_phantoms_import_run_and_score(clean_pipeline, worker_proc) -> None:  # noqa: F811
    data_dir = clean_pipeline.data_dir
    src = data_dir / "synthrad2025-cbct"
    _write_synthrad_cbct(src)
    assert sorted(p.name for p in (src / "Task2").iterdir()) == ["AB", "HN", "TH"]
    job = import_folder(src, "cbct")
    total = sum(CASES.values())
    with session_scope() as s:
        cases = list(s.scalars(select(Case).where(
            Case.dataset_version_id == job.dataset_version_id).order_by(Case.name)))
        assert len(cases) == total
        for case in cases:
            code = case.name[1:3]
            assert case.modality is Modality.CBCT and case.name.startswith("2")
            assert case.region == next(n for c, n in REGIONS.values() if c == code)
            assert case.input_image_path.endswith("cbct.mha") and case.labels_path
        phase = harness.seed_phase(s, data_dir, slug="cbct", n_cases=0, batch_size=2,
                                   memory_mb=1024, metric_profile="synthrad2025")
        phase.dataset_version_id = job.dataset_version_id
        s.flush()
        sub_id = harness.submit(s, phase, "carol", "python").id
    sub = harness.wait_done([sub_id], timeout_s=300)[sub_id]
    with session_scope() as s:
        runs = list(s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)))
        results = list(s.scalars(select(Result).where(Result.submission_id == sub_id)))
        names = {c.id: c.name for c in cases}
    assert sub.status is SubmissionStatus.SUCCEEDED, (
        sub.error_message, [(r.status, r.error_message) for r in runs])
    assert (sub.cases_done, sub.cases_total) == (total, total)
    # Scored: every case has finite image metrics (and the label-map metrics of the phantom
    # profile's segmenter).
    assert len(results) == total
    for result in results:
        for metric in ("mae", "psnr", "ms_ssim"):
            value = result.metrics.get(metric)
            assert value is not None and math.isfinite(value), (metric, result.metrics)
    # One container per batch: its log names the files it processed — one region each.
    for run in runs:
        processed = {line.split(".mha:")[0] for line in run.stdout.splitlines()
                     if ".mha:" in line}
        assert names[run.case_id] in processed, run.stdout
        assert len({name[1:3] for name in processed}) == 1, run.stdout
