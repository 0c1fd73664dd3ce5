"""The embedded default: the whole participant/organiser flow on SQLite (no PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend import db
from backend.config import settings
from backend.models import SubmissionStatus
from backend.submissions import pipeline, state
from tests.backend.tarballs import make_image_tar
from tests.conftest import alembic_config


@pytest.fixture
def sqlite_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(settings, "database_url", f"sqlite:///{tmp_path / 'arena.db'}")
    monkeypatch.setattr(settings, "admin_emails", ["boss@example.org"])
    monkeypatch.setattr(db, "session_factory_override", None)
    db.get_engine.cache_clear()
    db.get_sessionmaker.cache_clear()
    with db.get_engine().connect() as conn:
        command.upgrade(alembic_config(conn), "head")
        conn.commit()
    yield
    db.get_engine().dispose()
    db.get_engine.cache_clear()
    db.get_sessionmaker.cache_clear()


def test_flow_on_sqlite(sqlite_db: None, app: FastAPI, broker_url: str,
                        tmp_path: Path) -> None:
    pytest.importorskip("evaluator.phantoms")
    boss, alice = TestClient(app), TestClient(app)
    assert boss.post("/api/auth/register", json={
        "email": "boss@example.org", "username": "boss", "password": "password!"}
    ).json()["is_admin"]
    alice.post("/api/auth/register", json={"email": "a@example.org", "username": "alice",
                                           "password": "password!"})
    assert boss.post("/api/challenges", json={"slug": "sr", "title": "SR"}).status_code == 201
    boss.post("/api/datasets", json={"slug": "hidden", "title": "H", "challenge": "sr"})
    r = boss.post("/api/datasets/hidden/versions", json={"source": "phantom", "cases": 2})
    assert r.status_code == 201, r.text
    r = boss.post("/api/challenges/sr/phases", json={
        "slug": "val", "title": "Val", "dataset": "hidden", "is_open": True})
    assert r.status_code == 201, r.text
    alice.post("/api/challenges/sr/register")
    data = make_image_tar(tmp_path / "i.tar").read_bytes()
    up = alice.post("/api/images/uploads", json={"name": "a", "size_bytes": len(data)}).json()
    alice.put(f"/api/images/uploads/{up['id']}", content=data,
              headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
    image = alice.post(f"/api/images/uploads/{up['id']}/complete").json()
    assert image["status"] == "valid"
    sub = alice.post("/api/challenges/sr/phases/val/submissions",
                     json={"image_id": image["id"]}).json()
    # What the worker does, through the same state helpers.
    S = SubmissionStatus
    with db.session_scope() as s:
        runs = pipeline.ensure_case_runs(s, state.transition(s, sub["id"], S.PENDING, S.RUNNING))
        for run in runs:
            pipeline.store_result(s, sub["id"], run.case_id, {"mae": 50.0, "psnr": 30.0})
        state.transition(s, sub["id"], S.RUNNING, S.EVALUATING)
        pipeline.store_aggregate(s, sub["id"], {"mae": 50.0, "psnr": 30.0}, {}, cases_scored=2)
        state.transition(s, sub["id"], S.EVALUATING, S.SUCCEEDED)
    rows = alice.get("/api/challenges/sr/phases/val/leaderboard").json()["rows"]
    assert [(r["rank"], r["username"]) for r in rows] == [(1, "alice")]
