"""Fixtures for the web pages: the app with its pages mounted, a temporary data folder,
log-in by session cookie, and the CSRF token a page hands out."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.config import settings
from backend.main import create_app
from backend.models import User
from backend.security import make_session_cookie

# The same temporary data folder (autouse) and test broker as the API tests.
from tests.backend.conftest import broker_url, data_dir  # noqa: F401


@pytest.fixture
def web(db_session: Session, broker_url: str) -> Iterator[TestClient]:  # noqa: F811
    app = create_app()
    assert any(getattr(r, "path", None) == "/static" for r in app.routes), "pages not mounted"
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
