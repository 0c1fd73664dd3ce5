"""Submission pages kept per viewer (``backend.web.kept_pages``): served again while the
database state they were built from holds, rebuilt on any change to it — and never to a
viewer who lost the right to see them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import (
    Challenge,
    ChallengeMember,
    ChallengeRole,
    Phase,
    Result,
    Submission,
    User,
)
from backend.submissions import service as submissions_service
from backend.submissions.schemas import SubmissionFlags
from backend.web import csrf, detail_view
from tests.backend.factories import make_user
from tests.web.conftest import login
from tests.web.test_pages import HTML, _board


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the submission page's builds (the ~10 queries and the rendering)."""
    from backend.web import submission_pages

    submission_pages._kept.clear()  # pages of earlier tests' (rolled back) rows
    counted: list[int] = []
    real = detail_view.build

    def build(*a: Any, **kw: Any) -> dict[str, Any]:
        counted.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(detail_view, "build", build)
    return counted


def _stored_board(db_session: Session) -> tuple[User, User, Phase, list[Submission]]:
    """The test leaderboard, stored as the app stores it when it changes."""
    from backend.leaderboards import service as leaderboards_service

    org, me, ph, subs = _board(db_session)
    leaderboards_service.stored(db_session, ph.id)
    return org, me, ph, subs


def _token(text: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', text)
    assert found is not None
    return found.group(1)


def test_a_submission_page_is_kept_while_its_state_holds(

        web: TestClient, db_session: Session, builds: list[int]) -> None:
    org, me, _, subs = _stored_board(db_session)
    mine = subs[1]
    url = f"/submissions/{mine.id}"
    login(web, me)
    first = web.get(url, headers=HTML)
    second = web.get(url, headers=HTML)
    assert first.status_code == second.status_code == 200 and len(builds) == 1
    assert second.text == first.text and second.headers["etag"] == first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    # a reload with the validator: nothing sent, nothing built
    r = web.get(url, headers={**HTML, "if-none-match": first.headers["etag"]})
    assert r.status_code == 304 and not r.content and len(builds) == 1

    login(web, make_user(db_session))  # someone else, with the owner's validator
    assert web.get(url, headers={**HTML, "if-none-match": first.headers["etag"]}
                   ).status_code == 404 and len(builds) == 2  # built: the access checks
    login(web, me)
    # another browser of the same user: the kept page with that browser's own token
    web.cookies.delete(csrf.COOKIE)
    other = web.get(url, headers=HTML)
    assert len(builds) == 2 and other.headers["etag"] != first.headers["etag"]
    token = _token(other.text)
    assert token == csrf._sign(other.cookies[csrf.COOKIE], web.cookies[
        "syntharena_session"]) and token != _token(first.text)
    assert other.text.replace(token, "") == first.text.replace(_token(first.text), "")

    # a per-case result changes: rebuilt, and the page shows the new value
    result = db_session.scalars(select(Result).where(Result.submission_id == mine.id)).first()
    assert result is not None
    result.metrics = {**result.metrics, "mae": 12345.678}
    db_session.flush()
    changed = web.get(url, headers=HTML).text
    assert len(builds) == 3 and "12345.678" in changed.replace(",", "")
    web.get(url, headers=HTML)
    assert len(builds) == 3

    # the leaderboard changes (another team hidden): the comparison plots are rebuilt
    submissions_service.set_flags(db_session, org, subs[0].id, SubmissionFlags(is_hidden=True))
    db_session.flush()
    web.get(url, headers=HTML)
    assert len(builds) == 4

    # the page of another viewer is its own (an organiser sees logs and the reference CT)
    login(web, org)
    assert web.get(url, headers=HTML).status_code == 200 and len(builds) == 5
    tag = web.get(url, headers=HTML).headers["etag"]
    assert len(builds) == 5
    # a process that has not kept the page builds it (the access checks), then answers 304
    from backend.web import submission_pages

    submission_pages._kept.clear()
    r = web.get(url, headers={**HTML, "if-none-match": tag})
    assert r.status_code == 304 and not r.content and len(builds) == 6


def test_a_viewer_who_loses_access_is_not_served_the_kept_page(
        web: TestClient, db_session: Session, builds: list[int]) -> None:
    org, me, ph, subs = _stored_board(db_session)
    url = f"/submissions/{subs[1].id}"
    login(web, org)
    assert web.get(url, headers=HTML).status_code == 200
    assert web.get(url, headers=HTML).status_code == 200 and len(builds) == 1
    member = db_session.scalars(select(ChallengeMember).where(
        ChallengeMember.user_id == org.id,
        ChallengeMember.challenge_id == ph.challenge_id)).one()
    member.role = ChallengeRole.PARTICIPANT  # no longer an organiser of this challenge
    db_session.flush()
    assert web.get(url, headers=HTML).status_code == 404 and len(builds) == 2
    member.role = ChallengeRole.ORGANIZER
    db_session.flush()
    assert web.get(url, headers=HTML).status_code == 200
    db_session.delete(member)  # removed from the challenge altogether
    db_session.flush()
    assert web.get(url, headers=HTML).status_code == 404
    # the owner's own page, then the phase hides per-case results: the page follows
    login(web, me)
    assert "<h2>Per case</h2>" in web.get(url, headers=HTML).text
    ph.show_case_results = False
    db_session.flush()
    n = len(builds)
    hidden = web.get(url, headers=HTML).text
    assert "Per-case results are hidden" in hidden and "<h2>Per case</h2>" not in hidden
    assert len(builds) == n + 1
    challenge = db_session.get(Challenge, ph.challenge_id)
    assert challenge is not None
    challenge.title = "Renamed challenge"
    db_session.flush()
    assert "Renamed challenge" in web.get(url, headers=HTML).text and len(builds) == n + 2


def test_a_page_the_storage_could_not_complete_is_not_kept(
        web: TestClient, db_session: Session, builds: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A storage read that fails (mocked: an unreachable object store, a fault this test
    cannot cause for real) leaves out the viewer; the page is built again at the next
    request rather than kept without it. A page with a flash message is not kept either."""
    from contextlib import contextmanager

    from backend import object_cache
    from backend.models import CaseRun
    from backend.web import flash

    _, me, _, subs = _stored_board(db_session)
    url = f"/submissions/{subs[1].id}"
    run = db_session.scalars(select(CaseRun).where(CaseRun.submission_id == subs[1].id)).first()
    assert run is not None
    run.prediction_path = "predictions/x/sct.mha"  # the viewer reads the case's input
    db_session.flush()

    real_local_file = object_cache.local_file
    down = [True]

    @contextmanager
    def flaky(key: str) -> Any:
        if down[0]:
            raise ConnectionRefusedError("storage down")
        with real_local_file(key) as path:
            yield path

    monkeypatch.setattr(object_cache, "local_file", flaky)
    login(web, me)
    assert web.get(url, headers=HTML).status_code == 200
    assert web.get(url, headers=HTML).status_code == 200 and len(builds) == 2
    down[0] = False
    web.cookies.set(flash.COOKIE, "x")
    web.get(url, headers=HTML)
    web.cookies.delete(flash.COOKIE)
    web.get(url, headers=HTML)
    web.get(url, headers=HTML)
    assert len(builds) == 4  # the flash page built and not kept, then one build kept


def test_the_submission_api_answers_304_and_follows_changes(
        web: TestClient, db_session: Session) -> None:
    """``GET /api/submissions/{id}``: kept per viewer like the page, with an ETag; the
    aggregate, the submission and the viewer's rights are read at every request."""
    from backend.models import AggregateResult
    from backend.submissions import router as submissions_router

    submissions_router._kept.clear()
    org, me, ph, subs = _stored_board(db_session)
    url = f"/api/submissions/{subs[1].id}"
    login(web, me)
    first = web.get(url)
    assert first.status_code == 200 and first.json()["metrics"]["mae"] == 70.0
    tag = first.headers["etag"]
    assert web.get(url, headers={"if-none-match": tag}).status_code == 304
    login(web, make_user(db_session))  # someone else, with the owner's validator
    assert web.get(url, headers={"if-none-match": tag}).status_code == 404
    login(web, me)
    assert web.get(url).content == first.content
    agg = db_session.scalars(select(AggregateResult).where(
        AggregateResult.submission_id == subs[1].id)).one()
    agg.metrics = {**agg.metrics, "mae": 71.5}
    db_session.flush()
    changed = web.get(url, headers={"if-none-match": tag})
    assert changed.status_code == 200 and changed.json()["metrics"]["mae"] == 71.5
    ph.leaderboard_public = False  # participants no longer see their scores
    db_session.flush()
    assert web.get(url).json()["metrics"] is None
    login(web, org)
    assert web.get(url).json()["metrics"]["mae"] == 71.5
    member = db_session.scalars(select(ChallengeMember).where(
        ChallengeMember.user_id == org.id,
        ChallengeMember.challenge_id == ph.challenge_id)).one()
    db_session.delete(member)
    db_session.flush()
    assert web.get(url).status_code == 404


def test_the_polled_status_fragment_follows_its_case_runs(
        web: TestClient, db_session: Session) -> None:
    """The HTMX status widget is kept like the page: a poll between two changes is answered
    from memory, a change of a case run (the worker's progress) shows at the next poll."""
    from backend.models import CaseRun, CaseRunStatus, SubmissionStatus
    from backend.web import submission_pages

    submission_pages._kept_status.clear()
    _, me, _, subs = _stored_board(db_session)
    sub = subs[1]
    url = f"/submissions/{sub.id}/status"
    sub.status = SubmissionStatus.FAILED
    db_session.flush()
    login(web, me)
    first = web.get(url)
    assert first.status_code == 200 and "Failed" in first.text
    assert web.get(url).text == first.text
    run = db_session.scalars(select(CaseRun).where(CaseRun.submission_id == sub.id)).first()
    assert run is not None
    run.status, run.error_message = CaseRunStatus.TIMED_OUT, "took longer than 600 s"
    db_session.flush()
    assert "took longer than 600 s" in web.get(url).text  # names the failed case now
    login(web, make_user(db_session))
    assert web.get(url).status_code == 404
