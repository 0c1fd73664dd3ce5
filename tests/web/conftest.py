"""Fixtures for the web pages: the app with its pages mounted, a temporary data folder,
log-in by session cookie, and the CSRF token a page hands out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend import storage, tasks_client
from backend.config import settings
from backend.main import create_app
from backend.models import User
from backend.security import make_session_cookie

TEST_REDIS_DB = 15


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


def _with_pages(app_routes: list[object]) -> bool:
    return any(getattr(r, "path", None) == "/static" for r in app_routes)


@pytest.fixture
def web(db_session: Session, broker_url: str) -> Iterator[TestClient]:
    app = create_app()
    if not _with_pages(list(app.routes)):  # until backend.main mounts the pages itself
        from backend.web.router import mount_web

        mount_web(app)
    with TestClient(app, follow_redirects=False) as client:
        yield client


def login(client: TestClient, user: User) -> None:
    client.cookies.set(settings.session_cookie_name,
                       make_session_cookie(user.id, user.password_hash))


def csrf_token(client: TestClient, path: str = "/") -> str:
    """GET a page (which sets the CSRF cookie) and read the token from its <meta>."""
    page = client.get(path, headers={"accept": "text/html"})
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert found, page.text[:500]
    return found.group(1)
