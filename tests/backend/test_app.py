from __future__ import annotations

from fastapi.testclient import TestClient


def test_openapi_docs_and_json_errors(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/images/uploads/{upload_id}" in spec["paths"]
    r = client.get("/api/challenges/does-not-exist")
    assert r.status_code == 404
    assert r.json() == {"detail": "There is no challenge 'does-not-exist'."}
    r = client.post("/api/auth/register", json={"email": "x"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
