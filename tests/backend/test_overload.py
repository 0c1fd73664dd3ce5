"""Overload and database outages answer a retryable 503 with a clear message, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from backend.main import create_app


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
