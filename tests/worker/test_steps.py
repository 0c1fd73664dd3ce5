"""The pipeline's steps called directly (no Celery worker): idempotence under repeats."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from backend.db import session_scope
from backend.models import (
    AggregateResult,
    CaseRun,
    CaseRunStatus,
    Result,
    Submission,
    SubmissionStatus,
)
from tests.worker import harness
from worker import steps

pytestmark = pytest.mark.docker


def _submit(env, example: str, **phase) -> int:
    with session_scope() as s:
        p = harness.seed_phase(s, env.data_dir, slug=f"p-{example}", n_cases=2, **phase)
        return harness.submit(s, p, "alice", example).id


def _runs(sub_id: int) -> list[CaseRun]:
    with session_scope() as s:
        return list(s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)
                              .order_by(CaseRun.id)))


def _sub(sub_id: int) -> Submission:
    with session_scope() as s:
        sub = s.get(Submission, sub_id)
        assert sub is not None
        return sub


def test_every_step_twice_gives_one_result_per_case(clean_pipeline) -> None:
    sub_id = _submit(clean_pipeline, "static-c")
    steps.start_submission(sub_id)
    steps.start_submission(sub_id)  # a redelivered message
    runs = _runs(sub_id)
    assert len(runs) == 2 and _sub(sub_id).status is SubmissionStatus.RUNNING
    for r in runs:
        steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)
        steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)  # claims nothing
    runs = _runs(sub_id)
    assert all(r.status is CaseRunStatus.SUCCEEDED and r.attempts == 1 for r in runs)
    assert _sub(sub_id).status is SubmissionStatus.EVALUATING
    for r in runs:
        steps.evaluate_case(r.id)
        steps.evaluate_case(r.id)
    steps.finalize_submission(sub_id)
    steps.finalize_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.SUCCEEDED, sub.error_message
    assert (sub.cases_done, sub.cases_total) == (2, 2)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 2
        agg = s.scalar(select(AggregateResult))
        assert agg is not None and agg.cases_scored == 2 and "mae" in agg.metrics


def test_batch_mode_runs_cases_in_one_container(clean_pipeline) -> None:
    sub_id = _submit(clean_pipeline, "static-c", batch_size=2)
    steps.start_submission(sub_id)
    runs = _runs(sub_id)
    timings = steps.run_cases(sub_id, [r.id for r in runs], worker_name="pytest", gpu=None)
    assert "docker_start" in timings
    assert all(r.status is CaseRunStatus.SUCCEEDED for r in _runs(sub_id))


def test_gpu_phase_without_gpu_fails_with_a_reason(clean_pipeline) -> None:
    sub_id = _submit(clean_pipeline, "static-c", gpu_required=True)
    steps.start_submission(sub_id)
    for r in _runs(sub_id):
        steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)
    runs = _runs(sub_id)
    assert all(r.status is CaseRunStatus.FAILED and "requires a GPU" in r.error_message
               for r in runs)
    steps.finalize_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.FAILED and "requires a GPU" in sub.error_message


def test_cancel_stops_the_running_container(clean_pipeline) -> None:
    import threading
    import time

    from backend.submissions import state

    sub_id = _submit(clean_pipeline, "fail-sleep", case_time_limit_s=60)
    steps.start_submission(sub_id)
    run = _runs(sub_id)[0]
    t = threading.Thread(target=steps.run_cases, args=(sub_id, [run.id]),
                         kwargs={"worker_name": "pytest", "gpu": None})
    t0 = time.monotonic()
    t.start()
    time.sleep(1.5)
    with session_scope() as s:
        state.transition(s, sub_id, SubmissionStatus.RUNNING, SubmissionStatus.CANCELLED)
    t.join(30)
    assert time.monotonic() - t0 < 10
    assert _runs(sub_id)[0].status is CaseRunStatus.CANCELLED


def test_unreachable_docker_engine_is_retried_then_fails_with_a_reason(
        clean_pipeline, monkeypatch, tmp_path) -> None:
    """An engine that does not answer (nothing listens on DOCKER_HOST) is an infrastructure
    fault: the case goes back to PENDING, attempts counted, until case_run_max_attempts; then
    it fails saying so, and the submission ends instead of waiting forever."""
    from backend.config import settings
    from worker import sandbox

    sub_id = _submit(clean_pipeline, "static-c")
    steps.start_submission(sub_id)  # the image is loaded on the real engine
    runs = _runs(sub_id)
    seen = []
    monkeypatch.setattr(settings, "sandbox_engine_wait_s", 0)
    with monkeypatch.context() as m:
        m.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
        sandbox._client.cache_clear()
        try:
            assert not sandbox.ping()
            for _ in range(settings.case_run_max_attempts):
                for r in runs:
                    steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)
                seen.append([(r.status, r.attempts) for r in _runs(sub_id)])
        finally:
            sandbox._client.cache_clear()
    assert sandbox.ping()  # the real engine again
    pending, failed = CaseRunStatus.PENDING, CaseRunStatus.FAILED
    assert seen == [[(pending, 1)] * 2, [(pending, 2)] * 2, [(failed, 3)] * 2], seen
    message = _runs(sub_id)[0].error_message
    assert "Docker engine failed while running this case, 3 times" in message, message
    assert "not a fault of the algorithm" in message and "could not be reached" in message
    steps.finalize_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.FAILED and "Docker engine" in sub.error_message
