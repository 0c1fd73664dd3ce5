"""Web security: CSRF for cookie sessions (page forms and the API), login rate limiting,
session cookie flags, no path traversal where files are served, secrets never logged."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.auth import service as auth_service
from backend.config import settings
from tests.backend.factories import PASSWORD, auth, make_user
from tests.reliability import figures
from tests.web.conftest import (  # noqa: F401  (fixtures)
    broker_url,
    csrf_token,
    data_dir,
    login,
    web,
)


@pytest.fixture(autouse=True)
def _fresh_login_counters() -> None:
    auth_service._failures.clear()


def test_csrf_for_cookie_sessions(web: TestClient, db_session: Session) -> None:  # noqa: F811
    user = make_user(db_session)
    # Page forms: a POST without the token is refused.
    login(web, user)
    no_token = web.post("/logout", data={})
    # API with the session cookie: a request another site makes is refused...
    evil = {"Origin": "https://evil.example", "Content-Type": "application/json"}
    cross = web.post("/api/auth/tokens", json={"name": "x"}, headers=evil)
    fetch_meta = web.post("/api/auth/tokens", json={"name": "x"},
                          headers={"Sec-Fetch-Site": "cross-site"})
    null_origin = web.post("/api/auth/tokens", json={"name": "x"}, headers={"Origin": "null"})
    # ... the site's own requests work, and so do API tokens from anywhere.
    same = web.post("/api/auth/tokens", json={"name": "ok"},
                    headers={"Origin": "http://testserver"})
    web.cookies.clear()
    bearer = web.post("/api/auth/tokens", json={"name": "cli"},
                      headers={**auth(db_session, user), **evil})
    codes = {"form without token": no_token.status_code, "cross-site Origin": cross.status_code,
             "Sec-Fetch-Site cross-site": fetch_meta.status_code,
             "Origin null": null_origin.status_code, "same origin": same.status_code,
             "bearer token cross-site": bearer.status_code}
    ok = codes == {"form without token": 403, "cross-site Origin": 403,
                   "Sec-Fetch-Site cross-site": 403, "Origin null": 403, "same origin": 201,
                   "bearer token cross-site": 201}
    figures.record("attacks", "web:csrf", kind="web", contained=ok, outcome=str(codes))
    assert ok, codes
    assert "Cross-site request refused" in cross.json()["detail"]


def test_login_rate_limited(web: TestClient, db_session: Session) -> None:  # noqa: F811
    user = make_user(db_session)
    url = "/api/auth/login"
    codes = [web.post(url, json={"username": user.username, "password": f"guess{i}"}).status_code
             for i in range(settings.login_max_failures)]
    blocked = web.post(url, json={"username": user.username, "password": PASSWORD})
    other = make_user(db_session)
    unaffected = web.post(url, json={"username": other.username, "password": PASSWORD})
    ok = (set(codes) == {401} and blocked.status_code == 429
          and "try again in" in blocked.json()["detail"] and unaffected.status_code == 200)
    figures.record("attacks", "web:login-brute-force", kind="web", contained=ok,
                   outcome=f"{len(codes)} wrong -> 401; next (even right) -> "
                           f"{blocked.status_code}: {blocked.json().get('detail', '')[:80]}")
    assert ok, (codes, blocked.text, unaffected.text)


@pytest.mark.parametrize("secure", [False, True])
def test_session_cookie_flags(web: TestClient, db_session: Session,  # noqa: F811
                              monkeypatch: pytest.MonkeyPatch, secure: bool) -> None:
    monkeypatch.setattr(settings, "session_cookie_secure", secure)
    user = make_user(db_session)
    r = web.post("/api/auth/login", json={"username": user.username, "password": PASSWORD})
    assert r.status_code == 200
    cookies = [v for k, v in r.headers.multi_items() if k.lower() == "set-cookie"]
    session_cookie = next(c for c in cookies if c.startswith(settings.session_cookie_name))
    flags = {p.strip().lower() for p in session_cookie.split(";")[1:]}
    ok = "httponly" in flags and "samesite=lax" in flags and (("secure" in flags) == secure)
    figures.record("attacks", f"web:cookie-flags{'-secure' if secure else ''}", kind="web",
                   contained=ok, outcome="; ".join(sorted(f.split("=")[0] for f in flags)))
    assert ok, session_cookie


TRAVERSALS = ["/static/../backend/config.py", "/static/%2e%2e/%2e%2e/backend/config.py",
              "/static/..%2f..%2fbackend%2fconfig.py", "/static/....//....//etc/passwd",
              "/static/%252e%252e/etc/passwd", "/static//etc/passwd",
              "/api/images/uploads/..%2f..%2f..%2fetc%2fpasswd",
              "/api/images/uploads/%2e%2e"]


def test_no_path_traversal(web: TestClient, db_session: Session) -> None:  # noqa: F811
    h = auth(db_session, make_user(db_session))
    leaks = []
    for path in TRAVERSALS:
        for method in ("GET", "PUT"):
            r = web.request(method, path, headers={**h, "Content-Range": "bytes 0-0/1"},
                            content=b"x" if method == "PUT" else None)
            if r.status_code < 400 or "root:" in r.text or "SYNTHARENA_" in r.text \
                    or "BaseSettings" in r.text:
                leaks.append((method, path, r.status_code))
    stray = [p for p in settings.data_dir.parent.rglob("passwd")]
    ok = not leaks and not stray
    figures.record("attacks", "web:path-traversal", kind="web", contained=ok,
                   outcome=f"{len(TRAVERSALS) * 2} requests, all 4xx" if ok else str(leaks))
    assert ok, (leaks, stray)


def test_secrets_never_logged(web: TestClient, db_session: Session,  # noqa: F811
                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = "correct-horse-battery-staple-42"
    r = web.post("/api/auth/register", json={"username": "carl", "email": "carl@example.org",
                                             "password": password})
    assert r.status_code == 201, r.text
    web.post("/api/auth/login", json={"username": "carl", "password": "wrong-" + password})
    r = web.post("/api/auth/login", json={"username": "carl", "password": password})
    token = web.post("/api/auth/tokens", json={"name": "t"},
                     headers={"Origin": "http://testserver"}).json()["token"]
    web.cookies.clear()
    web.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    web.get("/api/auth/me", headers={"Authorization": "Bearer sa_not-a-real-token"})
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    found = [s for s in (password, token, settings.secret_key) if s and s in text]
    figures.record("attacks", "web:secrets-in-logs", kind="web", contained=not found,
                   outcome=f"{len(caplog.records)} log records checked; "
                           f"{'none' if not found else len(found)} secrets found")
    assert not found
