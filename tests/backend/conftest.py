"""Backend fixtures: a temporary data folder, the app client, a Redis database for tasks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend import cli, security, storage, tasks_client
from backend.config import settings
from backend.main import create_app

TEST_REDIS_DB = 15


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """argon2 with production cost takes ~0.1-0.5 s per hash on a busy CI box; tests only
    need the real algorithm, not its cost."""
    saved = security._hasher
    security._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    security._hasher = saved


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path) -> Iterator[Path]:
    saved = settings.data_dir
    settings.data_dir = tmp_path / "data"
    storage.get_storage.cache_clear()
    yield settings.data_dir
    settings.data_dir = saved
    storage.get_storage.cache_clear()


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    base = settings.redis_url.rsplit("/", 1)[0]
    url = f"{base}/{TEST_REDIS_DB}"
    tasks_client.configure(url)
    yield url
    tasks_client.configure(None)


@dataclass
class TaskQueue:
    """The real Redis list the backend enqueues into; a queue name of its own per test, so
    parallel test runs cannot see each other's messages."""

    redis: redis.Redis
    name: str

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.redis.lrange(self.name, 0, -1)]

    def task_names(self) -> list[str]:
        return [m["headers"]["task"] for m in self.messages()]


@pytest.fixture
def task_queue(broker_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TaskQueue]:
    queue = TaskQueue(redis.Redis.from_url(broker_url), f"test-images-{uuid.uuid4().hex}")
    monkeypatch.setitem(tasks_client.TASK_QUEUES, "submissions.start", queue.name)
    yield queue
    queue.redis.delete(queue.name)


@pytest.fixture(scope="session")
def app() -> FastAPI:
    return create_app()


@pytest.fixture
def client(app: FastAPI, db_session: Session, broker_url: str) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def cli_env(app: FastAPI, client: TestClient, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI talks to the in-process app and keeps its config under the returned folder."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    def make_client(server: str, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return TestClient(app, base_url=server, headers=headers)

    monkeypatch.setattr(cli, "make_client", make_client)
    return tmp_path
