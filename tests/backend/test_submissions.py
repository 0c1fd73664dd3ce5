from __future__ import annotations

import threading
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from backend import db
from backend.errors import AppError
from backend.models import (
    CaseRunStatus,
    Challenge,
    ImageStatus,
    Submission,
    SubmissionStatus,
    User,
    utcnow,
)
from backend.submissions import pipeline, service, state
from tests.backend import factories as f
from tests.backend.conftest import TaskQueue

S = SubmissionStatus


def _setup(db_session: Session, **phase_kw):  # type: ignore[no-untyped-def]
    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    phase = f.make_phase(db_session, ch, f.make_dataset_version(db_session, ch), **phase_kw)
    user = f.make_user(db_session)
    f.add_member(db_session, ch, user)
    return org, ch, phase, user


def _url(ch: Challenge, phase) -> str:  # type: ignore[no-untyped-def]
    return f"/api/challenges/{ch.slug}/phases/{phase.slug}/submissions"


def test_submit_enqueues_after_commit(client: TestClient, db_session: Session,
                                      task_queue: TaskQueue) -> None:
    _org, ch, phase, user = _setup(db_session)
    h = f.auth(db_session, user)
    image = f.make_image(db_session, user)
    r = client.post(_url(ch, phase), json={"image_id": image.id}, headers=h)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "pending" and body["cases_total"] == 3
    messages = task_queue.messages()
    assert [m["headers"]["task"] for m in messages] == ["submissions.start"]
    assert messages[0]["headers"]["argsrepr"] == f"[{body['id']}]"
    # A second one while the first is active is refused.
    r = client.post(_url(ch, phase), json={"image_id": image.id}, headers=h)
    assert r.status_code == 409 and "still pending" in r.json()["detail"]
    assert len(task_queue.messages()) == 1
    mine = client.get(_url(ch, phase), headers=h).json()
    assert [s["id"] for s in mine] == [body["id"]]
    assert client.get(f"/api/submissions/{body['id']}", headers=h).json()["status"] == "pending"


def test_rollback_drops_the_task(db_session: Session, task_queue: TaskQueue) -> None:
    _, ch, phase, user = _setup(db_session)
    session = db.new_session()
    sub = service.create(session, user, ch, phase, f.make_image(db_session, user).id)
    assert sub.id
    session.rollback()
    session.close()
    assert task_queue.messages() == []


def test_submission_rules(client: TestClient, db_session: Session, task_queue: TaskQueue) -> None:
    org, ch, phase, user = _setup(db_session, submissions_per_period=2)
    h = f.auth(db_session, user)
    url = _url(ch, phase)
    bad = f.make_image(db_session, user, status=ImageStatus.INVALID)
    assert client.post(url, json={"image_id": bad.id}, headers=h).status_code == 409
    theirs = f.make_image(db_session, org)
    assert client.post(url, json={"image_id": theirs.id}, headers=h).status_code == 404
    image = f.make_image(db_session, user)
    # Failed and cancelled ones do not count; succeeded ones do.
    f.make_submission(db_session, phase, user, image, status=S.FAILED)
    f.make_submission(db_session, phase, user, image, status=S.CANCELLED)
    f.make_submission(db_session, phase, user, image, status=S.SUCCEEDED)
    assert client.post(url, json={"image_id": image.id}, headers=h).status_code == 201
    for sub in db_session.scalars(select(Submission).where(Submission.user_id == user.id)):
        if sub.status is S.PENDING:
            sub.status = S.SUCCEEDED
    db_session.flush()
    r = client.post(url, json={"image_id": image.id}, headers=h)
    assert r.status_code == 429 and "2 of 2" in r.json()["detail"]
    # Organisers are not limited.
    oh = f.auth(db_session, org)
    assert client.post(url, json={"image_id": theirs.id}, headers=oh).status_code == 201


def test_window_and_registration(client: TestClient, db_session: Session,
                                 task_queue: TaskQueue) -> None:
    _, ch, phase, user = _setup(db_session, closes_at=utcnow() - timedelta(minutes=1))
    h = f.auth(db_session, user)
    image = f.make_image(db_session, user)
    r = client.post(_url(ch, phase), json={"image_id": image.id}, headers=h)
    assert r.status_code == 409 and "closed at" in r.json()["detail"]
    stranger = f.make_user(db_session)
    sh = f.auth(db_session, stranger)
    r = client.post(_url(ch, phase), json={"image_id": f.make_image(db_session, stranger).id},
                    headers=sh)
    assert r.status_code == 403 and "Register" in r.json()["detail"]


def test_owner_cancels_own_submission(
    client: TestClient, db_session: Session, task_queue: TaskQueue
) -> None:
    _org, _ch, phase, user = _setup(db_session)
    sub = f.make_submission(db_session, phase, user, status=S.RUNNING)
    r = client.post(f"/api/submissions/{sub.id}/cancel", headers=f.auth(db_session, user))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["current_step"] == "cancelled by its owner"


def test_organizer_actions(client: TestClient, db_session: Session, task_queue: TaskQueue) -> None:
    org, _ch, phase, user = _setup(db_session)
    oh, uh = f.auth(db_session, org), f.auth(db_session, user)
    sub = f.make_submission(db_session, phase, user, status=S.RUNNING, metrics={"mae": 1.0})
    r = client.post(f"/api/submissions/{sub.id}/cancel", headers=oh)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert "organiser" in r.json()["current_step"]
    assert client.post(f"/api/submissions/{sub.id}/cancel", headers=oh).status_code == 409
    assert client.post(f"/api/submissions/{sub.id}/reevaluate", headers=uh).status_code == 403
    r = client.post(f"/api/submissions/{sub.id}/reevaluate", headers=oh)
    assert r.json()["status"] == "pending" and r.json()["metrics"] is None
    assert task_queue.task_names() == ["submissions.start"]
    r = client.patch(f"/api/submissions/{sub.id}", headers=oh,
                     json={"is_hidden": True, "is_baseline": True})
    assert r.json()["is_hidden"] and r.json()["is_baseline"]
    assert client.patch(f"/api/submissions/{sub.id}", headers=uh,
                        json={"is_hidden": False}).status_code == 403


def test_case_results_and_logs_follow_phase_settings(client: TestClient,
                                                     db_session: Session) -> None:
    org, _ch, phase, user = _setup(db_session)
    sub = f.make_submission(db_session, phase, user, status=S.PENDING)
    runs = pipeline.ensure_case_runs(db_session, sub)
    state.move_case_run(db_session, runs[0].id, CaseRunStatus.RUNNING)
    state.move_case_run(db_session, runs[0].id, CaseRunStatus.FAILED, exit_code=3,
                        stdout="secret log", stderr="trace")
    pipeline.store_result(db_session, sub.id, runs[1].case_id, {"mae": 5.0})
    uh, oh = f.auth(db_session, user), f.auth(db_session, org)
    url = f"/api/submissions/{sub.id}/cases"
    assert client.get(url, headers=uh).status_code == 403
    org_view = client.get(url, headers=oh).json()
    assert org_view[0]["stdout"] == "secret log" and org_view[1]["metrics"] == {"mae": 5.0}
    phase.show_case_results = True
    db_session.flush()
    view = client.get(url, headers=uh).json()
    assert view[0]["exit_code"] == 3 and view[0]["stdout"] is None
    phase.show_case_logs = True
    db_session.flush()
    assert client.get(url, headers=uh).json()[0]["stderr"] == "trace"
    other = f.auth(db_session, f.make_user(db_session))
    assert client.get(url, headers=other).status_code == 404


def test_limit_is_exact_under_concurrency(db_engine: Engine, task_queue: TaskQueue) -> None:
    """Eight simultaneous submits against a limit of 2 (real commits, separate connections)."""
    from sqlalchemy.orm import sessionmaker

    maker = sessionmaker(bind=db_engine, expire_on_commit=False)
    with maker.begin() as s:
        org = f.make_user(s)
        ch = f.make_challenge(s, org)
        phase = f.make_phase(s, ch, f.make_dataset_version(s, ch), submissions_per_period=2)
        users = [f.make_user(s) for _ in range(2)]
        for u in users:
            f.add_member(s, ch, u)
        images = {u.id: [f.make_image(s, u) for _ in range(4)] for u in users}
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt(user: User, image_id: int) -> None:
        barrier.wait()
        s = maker()
        try:
            sub = service.create(s, s.get(User, user.id), s.get(Challenge, ch.id),  # type: ignore[arg-type]
                                 phase, image_id)
            # Finished in the same transaction, so the "one active submission" rule cannot
            # mask the limit: only the count decides.
            sub.status = S.SUCCEEDED
            s.commit()
            outcomes.append("ok")
        except AppError as exc:
            s.rollback()
            outcomes.append(type(exc).__name__)
        finally:
            s.close()

    threads = [threading.Thread(target=attempt, args=(u, img.id))
               for u in users for img in images[u.id]]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with maker() as s:
            for u in users:
                counted = s.scalars(select(Submission).where(
                    Submission.phase_id == phase.id, Submission.user_id == u.id,
                    Submission.status != S.FAILED)).all()
                assert len(counted) == 2
        assert sorted(outcomes) == ["TooManyRequestsError"] * 4 + ["ok"] * 4
    finally:
        with maker.begin() as s:
            s.execute(delete(Submission).where(Submission.phase_id == phase.id))
            s.execute(delete(Challenge).where(Challenge.id == ch.id))
            s.execute(delete(User).where(User.id.in_([org.id, *(u.id for u in users)])))


def test_broker_outage_does_not_fail_the_request(client: TestClient, db_session: Session,
                                                 broker_url: str) -> None:
    from backend import tasks_client

    _, ch, phase, user = _setup(db_session)
    tasks_client.configure("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        r = client.post(_url(ch, phase), json={"image_id": f.make_image(db_session, user).id},
                        headers=f.auth(db_session, user))
    finally:
        tasks_client.configure(broker_url)
    assert r.status_code == 201 and r.json()["status"] == "pending"


def test_tasks_wait_for_the_outermost_commit(db_session: Session, task_queue: TaskQueue) -> None:
    """A SAVEPOINT released inside the unit of work is not its commit: the outer transaction
    may still roll back, so nothing is sent until it commits."""
    from backend.tasks_client import enqueue_after_commit

    enqueue_after_commit(db_session, "submissions.start", [123456])
    with db_session.begin_nested():
        pass
    assert task_queue.messages() == []
    db_session.commit()
    assert task_queue.task_names() == ["submissions.start"]


def test_idempotency_key_replays_the_first_answer(client: TestClient, db_session: Session,
                                                  task_queue: TaskQueue) -> None:
    """A client that lost the answer repeats the request with the same key: it gets the
    submission the first request made (201, ``Idempotent-Replayed``), nothing new is queued;
    the key reused for another phase or image, or a malformed key, is refused (422)."""
    _org, ch, phase, user = _setup(db_session, submissions_per_period=5)
    h = f.auth(db_session, user)
    image, other = f.make_image(db_session, user), f.make_image(db_session, user)
    key = {"Idempotency-Key": "3f1c8a9e-6d4b-4c2e-9a7f-0b5d1e2c3a4b"}
    first = client.post(_url(ch, phase), json={"image_id": image.id}, headers=h | key)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    again = client.post(_url(ch, phase), json={"image_id": image.id}, headers=h | key)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(task_queue.messages()) == 1
    # The same key for another image is a client bug, not a replay.
    r = client.post(_url(ch, phase), json={"image_id": other.id}, headers=h | key)
    assert r.status_code == 422 and f"#{first.json()['id']} (another phase" in r.text
    # Without a key (or with a new one) the one-active-submission rule answers as before.
    r = client.post(_url(ch, phase), json={"image_id": image.id},
                    headers=h | {"Idempotency-Key": "another"})
    assert r.status_code == 409 and "still pending" in r.json()["detail"]
    for bad in ("", "x" * 129, "with space", "tab\tkey"):
        r = client.post(_url(ch, phase), json={"image_id": image.id},
                        headers=h | {"Idempotency-Key": bad})
        assert r.status_code == 422, (bad, r.status_code, r.text)
    # Keys belong to their user: another participant's equal key makes their own submission.
    someone = f.make_user(db_session)
    f.add_member(db_session, ch, someone)
    theirs = client.post(_url(ch, phase), json={"image_id": f.make_image(db_session, someone).id},
                         headers=f.auth(db_session, someone) | key)
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]
    assert "idempotent-replayed" not in theirs.headers


def test_same_key_racing_makes_one_submission(db_engine: Engine, task_queue: TaskQueue) -> None:
    """Four simultaneous requests with one key (a retry racing the first attempt, real commits
    on separate connections): one submission, and every request is answered with it."""
    from sqlalchemy.orm import sessionmaker

    maker = sessionmaker(bind=db_engine, expire_on_commit=False)
    with maker.begin() as s:
        org = f.make_user(s)
        ch = f.make_challenge(s, org)
        phase = f.make_phase(s, ch, f.make_dataset_version(s, ch), submissions_per_period=5)
        user = f.make_user(s)
        f.add_member(s, ch, user)
        image = f.make_image(s, user)
    barrier = threading.Barrier(4)
    answers: list[tuple[int, bool]] = []

    def attempt() -> None:
        barrier.wait()
        with maker() as s:
            me = s.get(User, user.id)
            assert me is not None
            sub = service.replay(s, me, phase, image.id, "same-key")
            replayed = sub is not None
            if sub is None:
                sub = service.create(s, me, s.get(Challenge, ch.id),  # type: ignore[arg-type]
                                     phase, image.id, idempotency_key="same-key")
            s.commit()
            answers.append((sub.id, replayed))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(answers) == 4 and len({i for i, _ in answers}) == 1
        assert sorted(r for _, r in answers) == [False, True, True, True]
        with maker() as s:
            assert len(s.scalars(select(Submission).where(
                Submission.phase_id == phase.id)).all()) == 1
    finally:
        with maker.begin() as s:
            s.execute(delete(Submission).where(Submission.phase_id == phase.id))
            s.execute(delete(Challenge).where(Challenge.id == ch.id))
            s.execute(delete(User).where(User.id.in_([org.id, user.id])))
