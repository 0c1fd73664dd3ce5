"""Overload and database outages answer a retryable 503 with a clear message, never a 500."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, delete, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from backend import db
from backend.config import settings
from backend.main import create_app
from backend.models import Challenge, Submission, User
from tests.backend import factories as f
from tests.backend.conftest import TaskQueue


@pytest.mark.parametrize("error", [
    sa_exc.TimeoutError("QueuePool limit of size 10 overflow 30 reached"),
    sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
])
def test_database_unavailable_is_a_retryable_503(error: Exception) -> None:
    app = create_app()

    @app.get("/api/_boom")
    def boom() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/_boom")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert "nothing was saved" in r.json()["detail"]


# A burst against a small pool and a small request thread pool (real PostgreSQL, real app).
# FastAPI runs every sync dependency, the endpoint and the response validation as separate
# thread-pool calls, and a request keeps its connection (and, once it has locked its user
# row, its row locks) between them. With more requests than threads, the threads end up held
# by requests waiting for a pooled connection while the requests holding the connections
# wait for a thread: nothing moves until the pool times out and answers 503.
THREADS, POOL_SIZE, POOL_OVERFLOW, POOL_TIMEOUT_S = 4, 2, 2, 3
BURST_USERS, BURST_PHASES, BURST_COPIES = 6, 2, 3


@dataclass
class Burst:
    maker: sessionmaker[Session]
    requests: list[tuple[str, int, dict[str, str]]]  # url, image id, auth header
    user_ids: list[int]
    phase_ids: list[int]
    challenge_id: int


@pytest.fixture
def burst(db_engine: Engine, task_queue: TaskQueue) -> Iterator[Burst]:
    """Users, phases (one submission per user) and tokens, committed for real."""
    maker = sessionmaker(bind=db_engine, expire_on_commit=False)
    with maker.begin() as s:
        org = f.make_user(s)
        ch = f.make_challenge(s, org)
        phases = [f.make_phase(s, ch, f.make_dataset_version(s, ch), submissions_per_period=1,
                               submission_period_s=None) for _ in range(BURST_PHASES)]
        requests, user_ids = [], [org.id]
        for _ in range(BURST_USERS):
            u = f.make_user(s)
            f.add_member(s, ch, u)
            image = f.make_image(s, u)
            header = f.auth(s, u)
            user_ids.append(u.id)
            requests += [(f"/api/challenges/{ch.slug}/phases/{p.slug}/submissions", image.id,
                          header) for p in phases for _ in range(BURST_COPIES)]
    yield Burst(maker, requests, user_ids, [p.id for p in phases], ch.id)
    with maker.begin() as s:
        s.execute(delete(Submission).where(Submission.phase_id.in_([p.id for p in phases])))
        s.execute(delete(Challenge).where(Challenge.id == ch.id))
        s.execute(delete(User).where(User.id.in_(user_ids)))


def _small_pool(url: Any, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """Requests get sessions from an engine with a small pool (the settings say so too)."""
    engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW,
                           pool_timeout=POOL_TIMEOUT_S, pool_pre_ping=True)
    monkeypatch.setattr(settings, "database_pool_size", POOL_SIZE)
    monkeypatch.setattr(settings, "database_max_overflow", POOL_OVERFLOW)
    monkeypatch.setattr(db, "session_factory_override",
                        sessionmaker(bind=engine, expire_on_commit=False))
    return engine


def _fire(app: FastAPI, requests: list[tuple[str, int, dict[str, str]]]
          ) -> tuple[list[tuple[int, str]], float]:
    async def main() -> list[tuple[int, str]]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     timeout=120) as c:
            async def one(url: str, image_id: int, header: dict[str, str]) -> tuple[int, str]:
                r = await c.post(url, json={"image_id": image_id}, headers=header)
                return r.status_code, r.text
            return list(await asyncio.gather(*(one(*req) for req in requests)))

    t0 = time.monotonic()
    answers = asyncio.run(main())
    return answers, time.monotonic() - t0


def test_burst_larger_than_the_pools_is_answered_without_503(
        app: FastAPI, burst: Burst, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _small_pool(burst.maker.kw["bind"].url, monkeypatch)
    try:
        answers, _ = _fire(app, burst.requests)
    finally:
        engine.dispose()
    codes = Counter(code for code, _ in answers)
    assert set(codes) <= {201, 409, 429}, (codes, [t for c, t in answers if c >= 500][:2])
    # Limits stay exact: one submission per user and phase, and every 201 is one of them.
    with burst.maker() as s:
        per_pair = s.execute(select(Submission.user_id, Submission.phase_id, func.count())
                             .where(Submission.phase_id.in_(burst.phase_ids))
                             .group_by(Submission.user_id, Submission.phase_id)).all()
    assert len(per_pair) == BURST_USERS * BURST_PHASES and all(n == 1 for *_, n in per_pair)
    assert codes[201] == BURST_USERS * BURST_PHASES


def test_database_outage_answers_503_quickly(
        app: FastAPI, burst: Burst, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens where the database should be: every request of a burst gets the
    retryable 503 at once, none waits out a pool or queue time-out."""
    url = burst.maker.kw["bind"].url.set(host="127.0.0.1", port=1)
    engine = _small_pool(url, monkeypatch)
    try:
        answers, took = _fire(app, burst.requests)
    finally:
        engine.dispose()
    assert {code for code, _ in answers} == {503}
    assert all("nothing was saved" in text for _, text in answers)
    assert took < POOL_TIMEOUT_S, took
