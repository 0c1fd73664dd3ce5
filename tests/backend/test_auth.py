from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.backend import factories as f


def test_register_login_cookie_and_me(client: TestClient) -> None:
    r = client.post("/api/auth/register", json={
        "email": "ada@example.org", "username": "ada", "password": "long enough"})
    assert r.status_code == 201, r.text
    assert client.get("/api/auth/me").json()["username"] == "ada"
    client.post("/api/auth/logout")
    client.cookies.clear()
    assert client.get("/api/auth/me").status_code == 401
    bad = client.post("/api/auth/login", json={"username": "ada", "password": "nope nope"})
    assert bad.status_code == 401 and "Wrong username or password" in bad.json()["detail"]
    ok = client.post("/api/auth/login", json={"username": "ada@example.org",
                                             "password": "long enough"})
    assert ok.status_code == 200
    assert client.get("/api/auth/me").json()["email"] == "ada@example.org"
    dup = client.post("/api/auth/register", json={
        "email": "ada@example.org", "username": "ada2", "password": "long enough"})
    assert dup.status_code == 409


def test_password_is_argon2(db_session: Session) -> None:
    user = f.make_user(db_session)
    assert user.password_hash.startswith("$argon2")


def test_api_token_lifecycle(client: TestClient, db_session: Session) -> None:
    user = f.make_user(db_session)
    r = client.post("/api/auth/tokens", json={"username": user.username,
                                              "password": f.PASSWORD, "name": "cli"})
    assert r.status_code == 201
    token = r.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    client.cookies.clear()
    assert client.get("/api/auth/me", headers=headers).json()["id"] == user.id
    tokens = client.get("/api/auth/tokens", headers=headers).json()
    assert [t["name"] for t in tokens] == ["cli"] and "token" not in tokens[0]
    assert client.delete(f"/api/auth/tokens/{tokens[0]['id']}", headers=headers).status_code == 200
    r = client.get("/api/auth/me", headers=headers)
    assert r.status_code == 401 and "syntharena login" in r.json()["detail"]


def test_garbage_token_and_cookie_are_rejected(client: TestClient) -> None:
    assert client.get("/api/auth/me", headers={"Authorization": "Bearer x"}).status_code == 401
    client.cookies.set("syntharena_session", "forged")
    assert client.get("/api/auth/me").status_code == 401


def test_token_use_is_recorded_to_the_minute(client: TestClient, db_session: Session) -> None:
    """The first use sets ``last_used_at``; reads within the minute after leave it (no write
    per request); a use a minute or more later moves it on."""
    from datetime import timedelta

    from sqlalchemy import select

    from backend.deps import TOKEN_USE_RESOLUTION
    from backend.models import ApiToken

    user = f.make_user(db_session)
    h = f.auth(db_session, user)
    token = db_session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)).one()
    assert token.last_used_at is None
    assert client.get("/api/auth/me", headers=h).status_code == 200
    db_session.refresh(token)
    first = token.last_used_at
    assert first is not None
    assert client.get("/api/auth/me", headers=h).status_code == 200
    db_session.refresh(token)
    assert token.last_used_at == first
    token.last_used_at = first - TOKEN_USE_RESOLUTION - timedelta(seconds=1)
    db_session.flush()
    assert client.get("/api/auth/me", headers=h).status_code == 200
    db_session.refresh(token)
    assert token.last_used_at is not None and token.last_used_at >= first
