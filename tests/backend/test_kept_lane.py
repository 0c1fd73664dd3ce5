"""The kept answers' event-loop path (``backend.kept_lane``) against a real PostgreSQL with
committed rows (the lane reads over its own connections, so the usual rolled-back test
session would be invisible to it): it answers only a plainly signed-in viewer whose kept
answer is current, and leaves everything else (a stale answer, a revoked token, a disabled
account) to the usual path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, select, text
from sqlalchemy.orm import Session, sessionmaker

from backend import db, kept_lane
from backend.leaderboards import service as leaderboards_service
from backend.models import AggregateResult, ApiToken, Challenge, User, utcnow
from backend.security import make_session_cookie
from backend.submissions import router as submissions_router
from backend.web import detail_view, submission_pages
from tests.backend import factories as f


@dataclass
class Committed:
    maker: sessionmaker[Session]
    submission_id: int
    owner_id: int
    header: dict[str, str]
    cookie: str


@pytest.fixture
def committed(db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Committed]:
    maker = sessionmaker(bind=db_engine, expire_on_commit=False)
    with maker.begin() as s:
        org = f.make_user(s)
        ch = f.make_challenge(s, org)
        ph = f.make_phase(s, ch, f.make_dataset_version(s, ch))
        owner = f.make_user(s)
        f.add_member(s, ch, owner)
        sub = f.make_submission(s, ph, owner, metrics={"mae": 61.0})
        header = f.auth(s, owner)
        leaderboards_service.stored(s, ph.id)
        cookie = make_session_cookie(owner.id, owner.password_hash)
    monkeypatch.setattr(db, "session_factory_override", maker)
    monkeypatch.setattr(kept_lane, "url_override",
                        db_engine.url.render_as_string(hide_password=False))
    submissions_router._kept.clear()
    submission_pages._kept.clear()
    yield Committed(maker, sub.id, owner.id, header, cookie)
    with maker.begin() as s:
        s.execute(delete(Challenge).where(Challenge.id == ch.id))
        s.execute(delete(User).where(User.id.in_([org.id, owner.id])))


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(module, name)

    def counted(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_the_lane_answers_current_kept_answers_and_nothing_else(
        app: FastAPI, committed: Committed, monkeypatch: pytest.MonkeyPatch) -> None:
    usual = _counting(monkeypatch, submissions_router, "_submission_answer")
    url = f"/api/submissions/{committed.submission_id}"
    with TestClient(app) as client:
        first = client.get(url, headers=committed.header)  # stamps the token's use, keeps
        assert first.status_code == 200 and first.json()["metrics"] == {"mae": 61.0}
        assert len(usual) == 1
        again = client.get(url, headers=committed.header)
        assert again.content == first.content and len(usual) == 1  # the lane answered
        r = client.get(url, headers={**committed.header, "if-none-match": first.headers["etag"]})
        assert r.status_code == 304 and len(usual) == 1
        with committed.maker.begin() as s:  # the aggregate changes: the lane finds it stale
            agg = s.scalars(select(AggregateResult).where(
                AggregateResult.submission_id == committed.submission_id)).one()
            agg.metrics = {"mae": 59.5}
        changed = client.get(url, headers=committed.header)
        assert changed.json()["metrics"] == {"mae": 59.5} and len(usual) == 2
        with committed.maker.begin() as s:  # revoked: the usual path refuses it
            for token in s.scalars(select(ApiToken).where(
                    ApiToken.user_id == committed.owner_id)):
                token.revoked_at = utcnow()
        assert client.get(url, headers=committed.header).status_code == 401
        assert len(usual) == 3


def test_the_lane_serves_kept_pages_to_a_session_and_not_to_a_disabled_account(
        app: FastAPI, committed: Committed, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = _counting(monkeypatch, detail_view, "build")
    url = f"/submissions/{committed.submission_id}"
    html = {"accept": "text/html"}
    with TestClient(app, follow_redirects=False) as client:
        client.cookies.set("syntharena_session", committed.cookie)
        first = client.get(url, headers=html)
        assert first.status_code == 200 and len(builds) == 1
        second = client.get(url, headers=html)
        assert second.status_code == 200 and len(builds) == 1  # the lane answered
        assert second.text == first.text
        assert client.get(f"{url}/status").status_code == 200
        with committed.maker.begin() as s:
            owner = s.get(User, committed.owner_id)
            assert owner is not None
            owner.is_active = False
        r = client.get(url, headers=html)
        assert r.status_code in (303, 307) and "/login" in r.headers["location"]
        assert client.get(f"{url}/status").status_code in (303, 307, 401)


def test_the_lane_outlives_its_connections(
        app: FastAPI, committed: Committed, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL drops every connection of the lane (as a restart of the server does): the
    requests that meet a dead connection are answered by the usual path, and the lane answers
    again once its pool has replaced them."""
    usual = _counting(monkeypatch, submissions_router, "_submission_answer")
    url = f"/api/submissions/{committed.submission_id}"
    with TestClient(app) as client:
        first = client.get(url, headers=committed.header)
        assert first.status_code == 200 and len(usual) == 1
        for _ in range(3):  # the pool's connections get made and used
            assert client.get(url, headers=committed.header).content == first.content
        assert len(usual) == 1
        with committed.maker.begin() as s:
            killed = s.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name"), {"name": kept_lane.APPLICATION_NAME})
        assert killed
        answers = [client.get(url, headers=committed.header) for _ in range(12)]
        assert all(a.status_code == 200 and a.content == first.content for a in answers)
        fell_back = len(usual) - 1
        assert 1 <= fell_back <= killed  # each dead connection costs one usual answer
        for _ in range(3):
            assert client.get(url, headers=committed.header).status_code == 200
        assert len(usual) - 1 == fell_back  # the lane answers again
