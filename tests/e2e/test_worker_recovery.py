"""A worker killed (SIGKILL, whole process group) mid-run is restarted: its leftover container
is removed, the reaper requeues the orphaned case, and the submission completes exactly once.
Its own module so that no other worker process shares the queues."""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import func, select

from backend.db import session_scope
from backend.models import AggregateResult, CaseRun, CaseRunStatus, Result, SubmissionStatus
from tests.worker import harness
from tests.worker.conftest import (  # noqa: F401  (fixtures)
    clean_pipeline,
    docker_engine,
    pipeline_env,
    static_images,
)
from worker import sandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _runs(sub_id: int) -> list[CaseRun]:
    with session_scope() as s:
        return list(s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)
                              .order_by(CaseRun.id)))


def test_worker_killed_mid_run_completes_once(clean_pipeline) -> None:  # noqa: F811
    env = clean_pipeline
    with session_scope() as s:
        p = harness.seed_phase(s, env.data_dir, slug="slow", n_cases=2)
        sub_id = harness.submit(s, p, "dave", "slow").id
    proc = harness.start_worker(env, "victim", concurrency=1)
    try:
        def victim_containers() -> list[dict[str, str]]:
            return [lbl for lbl in sandbox.running_labels()
                    if lbl.get(sandbox.LABEL_SUBMISSION) == str(sub_id)
                    and lbl.get(sandbox.LABEL_WORKER, "").startswith("victim@")]

        deadline = time.monotonic() + 120
        while not victim_containers():  # a case's container is running (it sleeps 5 s)
            assert time.monotonic() < deadline, "no case started"
            time.sleep(0.1)
        harness.stop_worker(proc, signal.SIGKILL)
        assert victim_containers(), "the killed worker left its container behind"
        killed = next(r for r in _runs(sub_id) if r.status is CaseRunStatus.RUNNING)

        proc = harness.start_worker(env, "victim", concurrency=1)
        # Restart: leftovers of this worker node are removed when it is ready.
        deadline = time.monotonic() + 120
        while any(lbl.get(sandbox.LABEL_SUBMISSION) == str(sub_id)
                  for lbl in sandbox.running_labels()):
            assert time.monotonic() < deadline, "leftover container not reaped"
            time.sleep(0.2)
        harness.wait_ready("victim@")
        from worker.reaper import reap

        report = reap(grace_s=0)
        assert killed.id in report.requeued_runs
        (sub,) = harness.wait_done([sub_id], timeout_s=120).values()
        assert sub.status is SubmissionStatus.SUCCEEDED, sub.error_message
        runs = _runs(sub_id)
        assert all(r.status is CaseRunStatus.SUCCEEDED for r in runs)
        assert next(r for r in runs if r.id == killed.id).attempts == 2
        with session_scope() as s:
            assert s.scalar(select(func.count()).select_from(Result)
                            .where(Result.submission_id == sub_id)) == 2
            assert s.scalar(select(func.count()).select_from(AggregateResult)) == 1
        # A second reaper pass finds nothing to do.
        again = reap(grace_s=0)
        assert not again.requeued_runs and not again.failed_runs
    finally:
        harness.stop_worker(proc)
