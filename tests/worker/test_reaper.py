"""The reaper requeues case runs no live worker owns, and gives up after max attempts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from backend.config import settings
from backend.db import session_scope
from backend.models import CaseRun, CaseRunStatus, Submission, SubmissionStatus, utcnow
from tests.worker import harness
from worker import reaper, steps

pytestmark = pytest.mark.docker


def _stuck_run(env, attempts: int) -> tuple[int, int]:
    with session_scope() as s:
        p = harness.seed_phase(s, env.data_dir, slug=f"r{attempts}", n_cases=1)
        sub_id = harness.submit(s, p, "erin", "static-c").id
    steps.start_submission(sub_id)
    with session_scope() as s:
        run = s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)).one()
        run.status = CaseRunStatus.RUNNING  # as if its worker died mid-run
        run.attempts = attempts
        run.started_at = utcnow() - timedelta(minutes=10)
        return sub_id, run.id


def test_orphaned_run_is_requeued_then_completes(clean_pipeline, monkeypatch) -> None:
    monkeypatch.setattr(reaper, "_active_tasks", lambda: [])  # no live worker owns it
    sub_id, run_id = _stuck_run(clean_pipeline, attempts=1)
    report = reaper.reap(grace_s=60)
    assert report.requeued_runs == [run_id]
    steps.run_cases(sub_id, [run_id], worker_name="pytest", gpu=None)
    with session_scope() as s:
        run = s.get(CaseRun, run_id)
        assert run is not None and run.status is CaseRunStatus.SUCCEEDED and run.attempts == 2


def test_run_owned_by_a_live_task_is_left_alone(clean_pipeline, monkeypatch) -> None:
    sub_id, run_id = _stuck_run(clean_pipeline, attempts=1)
    monkeypatch.setattr(reaper, "_active_tasks",
                        lambda: [{"name": "cases.run", "args": [sub_id, [run_id]]}])
    assert reaper.reap(grace_s=60).requeued_runs == []


def test_gives_up_after_max_attempts(clean_pipeline, monkeypatch) -> None:
    monkeypatch.setattr(reaper, "_active_tasks", lambda: [])
    sub_id, run_id = _stuck_run(clean_pipeline, attempts=settings.case_run_max_attempts)
    report = reaper.reap(grace_s=60)
    assert report.failed_runs == [run_id]
    with session_scope() as s:
        run = s.get(CaseRun, run_id)
        assert run is not None and "lost 3 times" in run.error_message
        sub = s.get(Submission, sub_id)
        assert sub is not None and sub.status is SubmissionStatus.EVALUATING
