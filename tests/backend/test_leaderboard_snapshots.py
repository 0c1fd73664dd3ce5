"""Stored leaderboards (issue #20): every change that ranks recomputes the next read, one
phase's recomputations serialise, pages come in a stable order, ETag/If-None-Match."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from backend import tasks_client
from backend.leaderboards import document, service
from backend.models import Challenge, Dataset, Phase, User
from backend.models.leaderboards import LeaderboardSnapshot
from backend.models.submissions import CaseRunStatus, Result, Submission, SubmissionStatus
from backend.submissions import pipeline
from tests.backend import factories as f
from tests.backend.conftest import TaskQueue

S = SubmissionStatus


@pytest.fixture
def recompute_queue(task_queue: TaskQueue, monkeypatch: pytest.MonkeyPatch) -> TaskQueue:
    """leaderboards.recompute goes to the test's own Redis list (next to submissions.start)."""
    monkeypatch.setitem(tasks_client.TASK_QUEUES, "leaderboards.recompute", task_queue.name)
    return task_queue


def _phase(db: Session, **kw: Any) -> tuple[User, Challenge, Phase]:
    org = f.make_user(db)
    ch = f.make_challenge(db, org)
    return org, ch, f.make_phase(db, ch, f.make_dataset_version(db, ch), **kw)


def _url(ch: Challenge, phase: Phase) -> str:
    return f"/api/challenges/{ch.slug}/phases/{phase.slug}/leaderboard"


def _names(client: TestClient, url: str, **kw: Any) -> list[tuple[str, int | None]]:
    r = client.get(url, **kw)
    assert r.status_code == 200, r.text
    return [(row["username"], row["rank"]) for row in r.json()["rows"]]


def test_each_change_shows_on_the_next_read(client: TestClient, db_session: Session,
                                            recompute_queue: TaskQueue) -> None:
    org, ch, phase = _phase(db_session)
    a, b, c = (f.make_user(db_session) for _ in range(3))
    sa = f.make_submission(db_session, phase, a, metrics={"mae": 10.0, "psnr": 30.0})
    f.make_submission(db_session, phase, b, metrics={"mae": 20.0, "psnr": 29.0})
    url, hdr = _url(ch, phase), f.auth(db_session, org)
    assert _names(client, url) == [(a.username, 1), (b.username, 2)]
    # Flags: hidden, disqualified, baseline.
    flag_url = f"/api/submissions/{sa.id}"
    assert client.patch(flag_url, json={"is_hidden": True}, headers=hdr).status_code == 200
    assert _names(client, url) == [(b.username, 1)]
    client.patch(flag_url, json={"is_hidden": False, "is_disqualified": True}, headers=hdr)
    assert _names(client, url) == [(b.username, 1), (a.username, None)]
    client.patch(flag_url, json={"is_disqualified": False, "is_baseline": True}, headers=hdr)
    rows = client.get(url).json()["rows"]
    assert [(r["username"], r["rank"], r["is_baseline"]) for r in rows] == [
        (b.username, 1, False), (a.username, None, True)]
    # A submission finalised by the pipeline (three scored cases).
    sc = f.make_submission(db_session, phase, c, status=S.EVALUATING)
    for i, run in enumerate(pipeline.ensure_case_runs(db_session, sc)):
        run.status = CaseRunStatus.SUCCEEDED
        db_session.add(Result(submission_id=sc.id, case_id=run.case_id,
                              metrics={"mae": 1.0 + i, "psnr": 40.0}))
    db_session.flush()
    pipeline.finalize(sc.id)
    assert _names(client, url)[:2] == [(c.username, 1), (b.username, 2)]
    assert client.get(url).json()["rows"][0]["cases"] == 3
    # Re-evaluation takes it off the board until it is scored again.
    assert client.post(f"/api/submissions/{sc.id}/reevaluate", headers=hdr).status_code == 200
    assert [n for n, _ in _names(client, url)] == [b.username, a.username]
    # Cancel (of the re-evaluation) bumps it too.
    version = db_session.get(Phase, phase.id, populate_existing=True).leaderboard_version  # type: ignore[union-attr]
    assert client.post(f"/api/submissions/{sc.id}/cancel", headers=hdr).status_code == 200
    db_session.expire_all()
    assert db_session.get(Phase, phase.id).leaderboard_version > version  # type: ignore[union-attr]
    # Phase settings: ranking method, columns, visibility.
    settings_url = f"/api/challenges/{ch.slug}/phases/{phase.slug}"
    client.patch(settings_url, json={"ranking_method": "absolute",
                                     "extra_columns": [{"metric": "ssim",
                                                        "higher_is_better": True}]},
                 headers=hdr)
    board = client.get(url).json()
    assert board["ranking_method"] == "absolute"
    assert [col["metric"] for col in board["columns"]] == ["mae", "ssim"]
    client.patch(settings_url, json={"leaderboard_public": False}, headers=hdr)
    assert client.get(url).status_code == 403
    # Every change enqueued a recomputation of this phase for the worker.
    recomputes = [m for m in recompute_queue.messages()
                  if m["headers"]["task"] == "leaderboards.recompute"]
    assert len(recomputes) >= 8
    assert all(m["headers"]["argsrepr"] == f"[{phase.id}]" for m in recomputes)


def test_a_read_sees_a_stale_snapshot_recomputed_without_a_worker(
        client: TestClient, db_session: Session) -> None:
    _, ch, phase = _phase(db_session)
    u = f.make_user(db_session)
    f.make_submission(db_session, phase, u, metrics={"mae": 10.0, "psnr": 30.0})
    url = _url(ch, phase)
    assert len(client.get(url).json()["rows"]) == 1
    snap = db_session.get(LeaderboardSnapshot, phase.id, populate_existing=True)
    assert snap is not None and snap.version == phase.leaderboard_version
    f.make_submission(db_session, phase, f.make_user(db_session), metrics={"mae": 5.0,
                                                                           "psnr": 31.0})
    assert client.get(url).json()["total"] == 2  # no worker ran: the read recomputed it


def test_the_worker_adds_rank_ranges_after_the_ranks(
        client: TestClient, db_session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "INLINE_INTERVAL_TEAMS", 0)  # as for a big leaderboard
    _, ch, phase = _phase(db_session, show_case_results=True)
    for i in range(3):
        sub = f.make_submission(db_session, phase, f.make_user(db_session),
                                metrics={"mae": 10.0 * (i + 1), "psnr": 30.0 - i})
        for j, run in enumerate(pipeline.ensure_case_runs(db_session, sub)):
            db_session.add(Result(submission_id=sub.id, case_id=run.case_id,
                                  metrics={"mae": 10.0 * (i + 1) + j, "psnr": 30.0 - i}))
    db_session.flush()
    url = _url(ch, phase)
    first = client.get(url)
    assert all(r["rank_interval"] is None for r in first.json()["rows"])
    service.recompute(phase.id)  # what leaderboards.recompute does in the worker
    second = client.get(url)
    intervals = [r["rank_interval"] for r in second.json()["rows"]]
    assert intervals[0] is not None and intervals[0][0] == 1.0
    assert second.headers["etag"] != first.headers["etag"]


def test_etag_and_not_modified(client: TestClient, db_session: Session) -> None:
    org, ch, phase = _phase(db_session)
    sub = f.make_submission(db_session, phase, f.make_user(db_session),
                            metrics={"mae": 10.0, "psnr": 30.0})
    url = _url(ch, phase)
    for headers in ({}, f.auth(db_session, org)):  # anonymous (memory) and signed-in reads
        first = client.get(url, headers=headers)
        etag = first.headers["etag"]
        assert first.status_code == 200 and "no-cache" in first.headers["cache-control"]
        again = client.get(url, headers={**headers, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert client.get(url + "?limit=5", headers={"If-None-Match": etag}).status_code == 200
    client.patch(f"/api/submissions/{sub.id}", json={"is_disqualified": True},
                 headers=f.auth(db_session, org))
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    # A hidden leaderboard may not be kept by shared caches.
    client.patch(f"/api/challenges/{ch.slug}/phases/{phase.slug}",
                 json={"leaderboard_public": False}, headers=f.auth(db_session, org))
    hidden = client.get(url, headers=f.auth(db_session, org))
    assert hidden.headers["cache-control"].startswith("private")


def test_pages_in_a_stable_order(client: TestClient, db_session: Session) -> None:
    org, ch, phase = _phase(db_session, show_case_results=True)
    users = [f.make_user(db_session) for _ in range(7)]
    subs = [f.make_submission(db_session, phase, u, metrics={"mae": float(10 + i % 3),
                                                             "psnr": 30.0})
            for i, u in enumerate(users)]
    url = _url(ch, phase)
    whole = client.get(url).json()
    assert whole["total"] == 7
    paged = []
    for offset in range(0, 7, 3):
        page = client.get(url, params={"offset": offset, "limit": 3}).json()
        assert page["total"] == 7 and page["offset"] == offset
        paged += page["rows"]
    assert [r["submission_id"] for r in paged] == [r["submission_id"] for r in whole["rows"]]
    assert [r["rank"] for r in paged] == sorted(r["rank"] for r in paged)  # ties: 1,1,1,4…
    assert client.get(url, params={"limit": 0}).status_code == 422
    # The HTML leaderboard: a page of rows, sorted on the server, ties in board order.
    html = {"accept": "text/html"}
    page_url = f"/challenges/{ch.slug}/{phase.slug}/leaderboard"
    seen = []
    for n in (1, 2, 3):
        text = client.get(page_url, params={"sort": "team", "dir": "desc", "per_page": 3,
                                            "page": n}, headers=html).text
        body = text.split("<tbody>")[1].split("</tbody>")[0]
        seen += [int(part.split('"')[0]) for part in body.split('data-submission="')[1:]]
        assert f"page {n} of 3" in text
        assert "data-sortable" not in text  # sorting one page in the browser would mislead
    by_team = sorted(whole["rows"], key=lambda r: r["username"].lower(), reverse=True)
    assert seen == [r["submission_id"] for r in by_team]
    # Submissions (newest first), cases (by name) and images: Link rel="next" pages.
    hdr = f.auth(db_session, org)
    sub_url = f"/api/challenges/{ch.slug}/phases/{phase.slug}/submissions"
    got, nxt = [], f"{sub_url}?limit=3"
    while nxt:
        r = client.get(nxt, headers=hdr)
        got += [s["id"] for s in r.json()]
        nxt = r.headers.get("link", "").partition("<")[2].partition(">")[0]
    assert got == sorted((s.id for s in subs), reverse=True)
    for run in pipeline.ensure_case_runs(db_session, subs[0]):
        run.status = CaseRunStatus.SUCCEEDED
    db_session.flush()
    cases = [c["case_name"] for c in client.get(f"/api/submissions/{subs[0].id}/cases",
                                                params={"limit": 2}, headers=hdr).json()]
    rest = client.get(f"/api/submissions/{subs[0].id}/cases", params={"offset": 2},
                      headers=hdr).json()
    full = [c["case_name"] for c in client.get(f"/api/submissions/{subs[0].id}/cases",
                                               headers=hdr).json()]
    assert cases + [c["case_name"] for c in rest] == full == sorted(full)
    assert len(cases) == 2 and len(rest) == 1
    # The organisers' submissions page: newest first, a page at a time.
    seen = []
    for n in (1, 2, 3):
        text = client.get(f"/manage/challenges/{ch.slug}/submissions",
                          params={"per_page": 3, "page": n}, headers={**hdr, **html}).text
        seen += [int(m) for m in re.findall(r'href="/submissions/(\d+)"', text)]
        assert f"page {n} of 3 (7 submissions)" in text, text[text.find("<main"):][:1500]
    assert list(dict.fromkeys(seen)) == sorted((s.id for s in subs), reverse=True)
    owner = users[0]
    images = [f.make_image(db_session, owner) for _ in range(3)]
    first = client.get("/api/images?limit=2", headers=f.auth(db_session, owner))
    assert 'rel="next"' in first.headers["link"]
    assert [i["id"] for i in first.json()] == sorted((i.id for i in images), reverse=True)[:2]


# ------------------------------------------------ concurrency (real commits, two sessions)


@pytest.fixture
def committed_phase(db_engine: Engine) -> Iterator[int]:
    """A phase with three ranked teams, committed (the two recomputations below run in
    transactions of their own); removed afterwards."""
    with Session(db_engine) as s:
        org = f.make_user(s)
        ch = f.make_challenge(s, org)
        phase = f.make_phase(s, ch, f.make_dataset_version(s, ch))
        users = [org] + [f.make_user(s) for _ in range(3)]
        for i, u in enumerate(users[1:]):
            f.make_submission(s, phase, u, metrics={"mae": 10.0 + i, "psnr": 30.0})
        s.commit()
        ids = (ch.id, phase.id, [u.id for u in users])
        dataset_ids = list(s.scalars(select(Dataset.id).where(Dataset.challenge_id == ch.id)))
    yield ids[1]
    with Session(db_engine) as s:
        s.execute(delete(Submission).where(Submission.phase_id == ids[1]))
        s.execute(delete(Challenge).where(Challenge.id == ids[0]))
        s.execute(delete(Dataset).where(Dataset.id.in_(dataset_ids)))
        s.execute(delete(User).where(User.id.in_(ids[2])))
        s.commit()


def _together(engine: Engine, n: int, work: Callable[[Session], str]) -> list[str]:
    """``work`` in ``n`` threads at once, each in its own session; their answers (any error
    fails the test)."""
    start = threading.Barrier(n)
    answers: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with Session(engine) as s:
                start.wait()
                answers.append(work(s))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return answers


def test_concurrent_recomputations_of_a_phase_serialise(
        db_engine: Engine, committed_phase: int, monkeypatch: pytest.MonkeyPatch) -> None:
    computed: list[int] = []
    real = document.compute

    def slow_compute(session: Session, phase: Phase, version: int) -> dict[str, Any]:
        computed.append(version)
        time.sleep(0.3)  # long enough that the other recomputation surely waits for the lock
        return real(session, phase, version)

    monkeypatch.setattr(document, "compute", slow_compute)
    with Session(db_engine) as s:  # a stored snapshot that a change has made stale
        service.refresh(s, committed_phase)
        service.invalidate(s, committed_phase)
        s.commit()
    computed.clear()

    def recompute(s: Session) -> str:
        etag = service.refresh(s, committed_phase).etag
        s.commit()
        return etag

    etags = _together(db_engine, 2, recompute)
    assert len(computed) == 1  # the second found the first's result current
    assert len(etags) == 2 and etags[0] == etags[1]
    with Session(db_engine) as s:
        snap = s.get(LeaderboardSnapshot, committed_phase)
        phase = s.get(Phase, committed_phase)
        assert snap is not None and phase is not None
        assert snap.version == phase.leaderboard_version
        assert [r["rank"] for r in snap.document["rows"]] == [1, 2, 3]
        # A change committed meanwhile makes the stored one stale; the next read redoes it.
        service.invalidate(s, committed_phase)
        s.commit()
        service.stored(s, committed_phase)
        s.commit()
    assert len(computed) == 2


def test_pages_query_the_same_whatever_the_rows(client: TestClient, db_session: Session,
                                                db_connection: Any) -> None:
    """No per-row queries: the HTML leaderboard and a submission page (reloaded: kept; first
    view: built) cost as many queries with 3 teams as with 12 (the stored document has the
    case counts and ranks); the build reads the submission, its phase, challenge, owner and
    image in one query."""
    from sqlalchemy import event

    from backend.web import submission_pages

    org, ch, phase = _phase(db_session)
    hdr = {**f.auth(db_session, org), "accept": "text/html"}
    first = f.make_submission(db_session, phase, f.make_user(db_session),
                              metrics={"mae": 1.0, "psnr": 30.0})
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    def queries(path: str, built: bool = False) -> int:
        assert client.get(path, headers=hdr).status_code == 200  # recomputes if stale
        if built:
            submission_pages._kept.clear()
        statements.clear()
        event.listen(db_connection, "before_cursor_execute", count)
        try:
            assert client.get(path, headers=hdr).status_code == 200
        finally:
            event.remove(db_connection, "before_cursor_execute", count)
        return len(statements)

    board, page = f"/challenges/{ch.slug}/{phase.slug}/leaderboard", f"/submissions/{first.id}"
    for _ in range(2):
        f.make_submission(db_session, phase, f.make_user(db_session),
                          metrics={"mae": 2.0, "psnr": 30.0})
    few = queries(board), queries(page), queries(page, built=True)
    assert min(few) > 0 and few[2] > few[1]
    assert not [s for s in statements if "FROM challenges" in s and "JOIN" not in s]
    for i in range(9):
        f.make_submission(db_session, phase, f.make_user(db_session),
                          metrics={"mae": 3.0 + i, "psnr": 30.0})
    assert (queries(board), queries(page), queries(page, built=True)) == few


def test_a_crowd_of_readers_loads_the_stored_document_once(
        db_engine: Engine, committed_phase: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight readers of a current snapshot that this process has not loaded yet (another
    process stored it) arrive at once: one loads and decodes it, the others wait and use it."""
    from backend.leaderboards import cache
    from backend.leaderboards import repository as repo

    with Session(db_engine) as s:
        expected = service.refresh(s, committed_phase).etag
        s.commit()
    loads: list[int] = []
    real = repo.document

    def slow_load(session: Session, phase_id: int) -> tuple[str, dict[str, Any]] | None:
        loads.append(phase_id)
        time.sleep(0.3)  # a large document: long enough for every reader to arrive
        return real(session, phase_id)

    monkeypatch.setattr(repo, "document", slow_load)
    monkeypatch.setattr(cache, "_documents", type(cache._documents)())  # this process: cold
    etags = _together(db_engine, 8, lambda s: service.stored(s, committed_phase).etag)
    assert etags == [expected] * 8
    assert loads == [committed_phase]


def test_a_stale_kept_page_is_confirmed_by_one_reader_while_the_others_get_it(
        client: TestClient, db_session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale-while-revalidate: when the kept page of a public leaderboard is due for
    confirmation, one anonymous reader confirms it (thread, session, queries) while the
    others meanwhile get it as last confirmed; a confirmation that fails hands the claim on."""
    from backend.config import settings

    _org, ch, phase = _phase(db_session)
    f.make_submission(db_session, phase, f.make_user(db_session), metrics={"mae": 1.0})
    url = _url(ch, phase)
    etag = client.get(url).headers["etag"]  # built and kept
    monkeypatch.setattr(settings, "leaderboard_cache_s", 0.0)  # always due
    calls: list[str] = []
    inside, go_on = threading.Event(), threading.Event()
    real = service.json_page

    def confirming(*args: Any) -> service.JsonPage:
        calls.append("confirm")
        if len(calls) == 1:
            inside.set()
            assert go_on.wait(10)
        elif len(calls) == 3:
            raise RuntimeError("the database went away")
        return real(*args)

    monkeypatch.setattr(service, "json_page", confirming)
    first: list[int] = []
    reader = threading.Thread(target=lambda: first.append(client.get(url).status_code))
    reader.start()
    assert inside.wait(10)  # the first reader holds the claim, inside its confirmation
    for _ in range(5):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["etag"] == etag
    assert calls == ["confirm"]  # the five did not touch the database
    go_on.set()
    reader.join(10)
    assert first == [200]
    # confirmed: the next due read confirms again (the claim ended with the new check) ...
    assert client.get(url).status_code == 200 and calls == ["confirm"] * 2
    # ... and a confirmation that fails ends its claim: the next reader confirms at once
    with pytest.raises(RuntimeError):
        client.get(url)
    assert client.get(url).status_code == 200 and calls == ["confirm"] * 4
