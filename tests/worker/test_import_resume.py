"""A dataset import survives a killed worker, on the real stack: a Celery worker subprocess
imports phantom cases, is SIGKILLed mid-import, the reaper re-sends the job to a second worker,
which skips the stored cases and finishes: every case once, the counts right."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backend.config import settings
from backend.datasets import service as datasets_service
from backend.datasets.schemas import ImportIn
from backend.db import session_scope
from backend.models import Case, Dataset, ImportJob, ImportStatus, User
from tests.worker import harness
from worker import reaper

pytestmark = pytest.mark.slow
CASES = 6


@pytest.fixture(scope="module")
def import_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.PipelineEnv]:
    with harness.settings_restored():
        yield harness.setup("syntharena_import_resume", tmp_path_factory.mktemp("imports"),
                            redis_db=13)


def _job(job_id: int) -> ImportJob:
    with session_scope() as s:
        job = s.get(ImportJob, job_id)
        assert job is not None
        s.expunge(job)
        return job


def _wait(job_id: int, done: object, timeout_s: float) -> ImportJob:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = _job(job_id)
        if done(job):  # type: ignore[operator]
            return job
        time.sleep(0.05)
    raise TimeoutError(f"import {job_id}: {_job(job_id).status}, {_job(job_id).cases_done}")


def test_import_resumes_after_its_worker_is_killed(import_env: harness.PipelineEnv) -> None:
    with session_scope() as s:
        admin = User(email="imp@example.org", username="imp", password_hash="x", is_admin=True)
        s.add(admin)
        s.flush()
        dataset = Dataset(slug="resume", title="Resume", created_by_id=admin.id)
        s.add(dataset)
        s.flush()
        job_id = datasets_service.start_import(s, admin, dataset, ImportIn(
            source="phantom", anatomy="pelvis", cases=CASES, size="medium")).id
    # queued on commit; one worker takes it
    first = harness.start_worker(import_env, "imp1", concurrency=1, queues=("eval",))
    try:
        _wait(job_id, lambda j: j.cases_done >= 2, timeout_s=180)
    finally:
        harness.stop_worker(first, signal.SIGKILL)
    killed = _job(job_id)
    assert killed.status is ImportStatus.RUNNING and 2 <= killed.cases_done < CASES, (
        "the import ended before the kill: use more or larger cases")
    time.sleep(1.5)  # older than the reaper's grace below

    second = harness.start_worker(import_env, "imp2", concurrency=1, queues=("eval",))
    try:
        harness.wait_ready("imp2", timeout_s=180)  # a loaded 2-core machine starts it slowly
        # The dead worker's message stays unacknowledged (Redis redelivers it only after the
        # visibility timeout): the reaper sees no live task for the job and sends it again.
        assert f"import {job_id}" in reaper.reap(grace_s=1).resent
        job = _wait(job_id, lambda j: j.status not in (ImportStatus.QUEUED,
                                                       ImportStatus.RUNNING), timeout_s=300)
    finally:
        harness.stop_worker(second)
    assert job.status is ImportStatus.SUCCEEDED, (job.message, job.errors)
    assert (job.cases_done, job.cases_total, job.attempts) == (CASES, CASES, 1)
    on_disk = sum(p.stat().st_size for root in (settings.inputs_dir, settings.groundtruth_dir)
                  for p in (root / job.target_dir).rglob("*") if p.is_file())
    assert job.bytes_done == on_disk  # each case counted once
    with session_scope() as s:
        names = s.scalars(select(Case.name).where(
            Case.dataset_version_id == job.dataset_version_id)).all()
        assert sorted(names) == [f"1PA{i:03d}" for i in range(1, CASES + 1)]
        assert s.scalar(select(func.count(ImportJob.id))) == 1
    assert all(Path(settings.data_dir / p).is_file() for p in _job(job_id).imported["1PA001"]
               .values() if isinstance(p, str) and p.endswith(".mha"))
