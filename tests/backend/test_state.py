from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import (
    ALLOWED_TRANSITIONS,
    Result,
    SubmissionStatus,
)
from backend.submissions import pipeline, state
from tests.backend import factories as f

S = SubmissionStatus


def _submission(db: Session, status: S = S.PENDING):  # type: ignore[no-untyped-def]
    org = f.make_user(db)
    ch = f.make_challenge(db, org)
    phase = f.make_phase(db, ch, f.make_dataset_version(db, ch, cases=2))
    return f.make_submission(db, phase, org, status=status)


def test_every_status_has_transitions() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(S)


def test_happy_path_counts_attempts_and_times(db_session: Session) -> None:
    sub = _submission(db_session)
    state.transition(db_session, sub.id, S.PENDING, S.RUNNING)
    assert sub.attempts == 1 and sub.started_at is not None
    state.transition(db_session, sub.id, S.RUNNING, S.EVALUATING)
    state.transition(db_session, sub.id, S.EVALUATING, S.SUCCEEDED, current_step="done")
    assert sub.finished_at is not None and sub.current_step == "done"
    state.transition(db_session, sub.id, S.SUCCEEDED, S.PENDING)  # re-evaluation
    assert sub.finished_at is None and sub.cases_done == 0


def test_stale_and_invalid_transitions(db_session: Session) -> None:
    sub = _submission(db_session)
    with pytest.raises(state.StaleTransitionError):
        state.transition(db_session, sub.id, S.RUNNING, S.EVALUATING)
    with pytest.raises(state.InvalidTransitionError):
        state.transition(db_session, sub.id, S.PENDING, S.SUCCEEDED)
    assert sub.status is S.PENDING


def test_case_runs_and_results_are_idempotent(db_session: Session) -> None:
    sub = _submission(db_session)
    runs = pipeline.ensure_case_runs(db_session, sub)
    again = pipeline.ensure_case_runs(db_session, sub)
    assert [r.id for r in runs] == [r.id for r in again] and sub.cases_total == 2
    pipeline.store_result(db_session, sub.id, runs[0].case_id, {"mae": 1.0})
    pipeline.store_result(db_session, sub.id, runs[0].case_id, {"mae": math.nan})
    rows = db_session.scalars(select(Result).where(Result.submission_id == sub.id)).all()
    assert len(rows) == 1
    db_session.refresh(rows[0])
    assert rows[0].metrics == {"mae": "nan"}  # stored so that it round-trips (not null)
    pipeline.store_aggregate(db_session, sub.id, {"mae": 2.0}, {}, cases_scored=1)
    pipeline.store_aggregate(db_session, sub.id, {"mae": 3.0}, {}, cases_scored=2)
    from backend.models import AggregateResult

    assert db_session.scalar(select(func.count()).select_from(AggregateResult)
                             .where(AggregateResult.submission_id == sub.id)) == 1


def test_finish_case_run_caps_logs(db_session: Session) -> None:
    sub = _submission(db_session)
    run = pipeline.ensure_case_runs(db_session, sub)[0]
    from backend.models import CaseRunStatus

    state.move_case_run(db_session, run.id, CaseRunStatus.RUNNING)
    state.move_case_run(db_session, run.id, CaseRunStatus.FAILED, exit_code=1,
                        stdout="x" * 200_000, stderr="boom")
    assert run.attempts == 1 and len(run.stdout) < 70_000 and run.stdout.endswith("x")
