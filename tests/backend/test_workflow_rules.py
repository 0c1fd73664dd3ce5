"""The workflow's tables and policies: case-run transitions, task -> queue routing, what a
viewer sees of a submission, batching."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy.orm import Session

from backend import access, tasks_client
from backend.models import CASE_RUN_TRANSITIONS, CaseRunStatus, PhaseKind
from backend.submissions import pipeline, state
from tests.backend import factories as f

R = CaseRunStatus


def _run(db: Session):  # type: ignore[no-untyped-def]
    org = f.make_user(db)
    ch = f.make_challenge(db, org)
    phase = f.make_phase(db, ch, f.make_dataset_version(db, ch, cases=1))
    sub = f.make_submission(db, phase, org)
    return pipeline.ensure_case_runs(db, sub)[0]


def test_every_case_run_status_has_transitions() -> None:
    assert set(CASE_RUN_TRANSITIONS) == set(R)


@pytest.mark.parametrize(("current", "new"), list(itertools.product(R, R)))
def test_case_run_moves_exactly_as_the_table_allows(db_session: Session, current: R,
                                                    new: R) -> None:
    run = _run(db_session)
    run.status = current  # set up the starting point directly
    db_session.flush()
    if new in CASE_RUN_TRANSITIONS[current]:
        moved = state.move_case_run(db_session, run.id, new)
        assert moved.status is new
        assert moved.attempts == (1 if new is R.RUNNING else 0)
    else:
        with pytest.raises(state.InvalidTransitionError):
            state.move_case_run(db_session, run.id, new)
        db_session.refresh(run)
        assert run.status is current


def test_scoring_failure_keeps_the_containers_record(db_session: Session) -> None:
    run = _run(db_session)
    state.move_case_run(db_session, run.id, R.RUNNING)
    state.move_case_run(db_session, run.id, R.SUCCEEDED, exit_code=0, stdout="ok",
                        prediction_path="predictions/1/x.mha")
    state.move_case_run(db_session, run.id, R.FAILED, error_message="could not be scored")
    assert (run.exit_code, run.stdout, run.prediction_path) == (0, "ok", "predictions/1/x.mha")
    assert run.error_message == "could not be scored"


def test_every_worker_task_is_routed_by_the_one_table() -> None:
    from worker import tasks  # noqa: F401  (registers the tasks)
    from worker.celery_app import app

    ours = {name for name in app.tasks if not name.startswith("celery.")}
    assert ours == set(tasks_client.TASK_QUEUES)
    for name, queue in tasks_client.TASK_QUEUES.items():
        assert app.conf.task_routes[name] == {"queue": queue}


def test_enqueueing_an_unknown_task_is_refused(db_session: Session) -> None:
    with pytest.raises(ValueError, match="TASK_QUEUES"):
        tasks_client.enqueue_after_commit(db_session, "cases.unknown", [1])


def test_batches_cover_every_id_once_in_order() -> None:
    ids = list(range(11))
    for size in (1, 3, 4, 11, 50):
        parts = list(pipeline.batches(ids, size))
        assert [i for p in parts for i in p] == ids
        assert all(0 < len(p) <= size for p in parts)
    assert list(pipeline.batches([], 3)) == []


@pytest.mark.parametrize("public", [False, True])
@pytest.mark.parametrize("cases", [False, True])
@pytest.mark.parametrize("logs", [False, True])
@pytest.mark.parametrize("kind", [PhaseKind.DEBUG, PhaseKind.TEST])
def test_submission_view_policy(db_session: Session, public: bool, cases: bool, logs: bool,
                                kind: PhaseKind) -> None:
    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    phase = f.make_phase(db_session, ch, leaderboard_public=public, show_case_results=cases,
                         show_case_logs=logs, kind=kind)
    organizer = access.submission_view(phase, organizer=True)
    assert (organizer.scores, organizer.cases, organizer.logs) == (True, True, True)
    assert "ct" in organizer.images
    owner = access.submission_view(phase, organizer=False)
    assert (owner.scores, owner.cases, owner.logs) == (public, cases, logs)
    assert owner.case_scores == (public and cases)
    # Ground truth (the reference CT and the difference) only in a debug phase's shown cases.
    shows_truth = "ct" in owner.images or "diff" in owner.images
    assert shows_truth == (cases and kind is PhaseKind.DEBUG)
    assert bool(owner.images) == cases
