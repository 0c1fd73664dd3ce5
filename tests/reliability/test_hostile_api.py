"""Hostile input to the API and the web forms (issue 15, round 2), by class:
identity forgery towards privileges, control bytes that PostgreSQL cannot store, numbers that
do not fit (huge ids, NaN/Infinity/1e400), and placeholder secrets. Every payload must end in a
4xx that says what to change: never a 500, never a privilege, never a half-created object."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.auth import service as auth_service
from backend.config import Settings, settings
from backend.images import service as images_service
from backend.images.schemas import UploadIn
from backend.models import (
    Challenge,
    ChallengeRole,
    ImageUpload,
    Phase,
    Submission,
    User,
)
from tests.backend import factories as f
from tests.backend.test_image_upload import (  # noqa: F401  (fixture)
    Committed,
    commit_after_connection_loss,
    committed,
)
from tests.reliability import figures
from tests.web.conftest import (  # noqa: F401  (fixtures)
    broker_url,
    csrf_token,
    data_dir,
    login,
    web,
)

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "chief@example.org"
JSON = {"content-type": "application/json"}


@pytest.fixture(autouse=True)
def _fresh_login_counters() -> None:
    auth_service._failures.clear()


def _codes_ok(codes: dict[str, int], allowed: set[int]) -> list[str]:
    return [f"{k}: {v}" for k, v in codes.items() if v not in allowed]


# --- 1. Identity forgery -> privilege ------------------------------------------------------

LOOKALIKES = {
    "case": "Chief@Example.ORG",
    "trailing dot": "chief@example.org.",
    "outer spaces": "  chief@example.org  ",
    "fullwidth": "ｃｈｉｅｆ@ｅｘａｍｐｌｅ.ｏｒｇ",
    "ideographic dot": "chief@example\u3002org",
    "zero-width space": "chief\u200b@example.org",
    "zero-width joiner": "ch\u200dief@example.org",
    "word joiner": "chief@exam\u2060ple.org",
    "BOM": "\ufeffchief@example.org",
    "soft hyphen": "chi\u00adef@example.org",
    "bidi override": "chief@example.org\u202e",
    "bidi isolate": "\u2066chief@example.org\u2069",
    "NUL": "chief\x00@example.org",
    "C1 control": "chief\x85@example.org",
    "tag character": "chief@example.org\U000e0041",
    "Hangul filler": "chief\u3164@example.org",
    "variation selector": "chief\ufe0f@example.org",
    "combining acute": "chie\u0301f@example.org",
    "decomposed + case": "CHIE\u0301F@example.org",
    "cyrillic homoglyph": "chi\u0435f@example.org",
}


@pytest.mark.parametrize("admin_first", [True, False], ids=["admin-registered", "admin-absent"])
def test_identity_forgery_never_gives_admin(web: TestClient, db_session: Session,  # noqa: F811
                                            monkeypatch: pytest.MonkeyPatch,
                                            admin_first: bool) -> None:
    """Each look-alike of an admin address, through the JSON API and the web form: refused
    (422: invisible/control characters), a conflict with the admin's account (409: the same
    address once normalised), or an ordinary account with a different address (201)."""
    monkeypatch.setattr(settings, "admin_emails",
                        Settings(admin_emails=[" CHIEF@example.org. "], dev_mode=True)
                        .admin_emails)
    if admin_first:
        r = web.post("/api/auth/register", json={"email": ADMIN, "username": "chief",
                                                 "password": "long enough pw"})
        assert r.status_code == 201 and r.json()["is_admin"], r.text
    outcomes: dict[str, str] = {}
    bad: list[str] = []
    for i, (name, email) in enumerate(LOOKALIKES.items()):
        for via in ("api", "form"):
            web.cookies.clear()
            username = f"mallory{i}{via}"
            if via == "api":
                r = web.post("/api/auth/register", json={"email": email, "username": username,
                                                         "password": "long enough pw"})
            else:
                r = web.post("/register", data={"email": email, "username": username,
                                                "password": "long enough pw",
                                                "csrf_token": csrf_token(web, "/register")})
            user = db_session.scalars(select(User).where(User.username == username)).first()
            outcomes[f"{name}/{via}"] = str(r.status_code)
            if r.status_code >= 500 or (user is not None and user.is_admin and admin_first):
                bad.append(f"{name}/{via}: {r.status_code}")
            if user is not None and user.is_admin and user.email != ADMIN:
                bad.append(f"{name}/{via}: admin with {user.email!r}")
            if r.status_code == 422:
                assert ("invisible or control" in r.text or "control character" in r.text
                        or "not an e-mail" in r.text), (name, via, r.text[:300])
    admins = db_session.scalars(select(User).where(User.is_admin)).all()
    ok = not bad and len(admins) == (1 if admin_first or admins else 0) \
        and all(a.email == ADMIN for a in admins)
    counts = {c: list(outcomes.values()).count(c) for c in sorted(set(outcomes.values()))}
    summary = (f"{len(LOOKALIKES)} look-alikes x (API, form): "
               + ", ".join(f"{n} x {c}" for c, n in counts.items())
               + " (422 invisible/control, 409 same address normalised, 201/303 another address"
               ", never admin)")
    which = "admin-registered" if admin_first else "admin-absent"
    figures.record("attacks", f"api:identity-forgery-{which}", kind="api", contained=ok,
                   outcome=f"{summary}; admins: {[a.email for a in admins]}")
    assert ok, (bad, [(a.username, a.email) for a in admins])


def test_login_names_are_one_identity(web: TestClient, db_session: Session) -> None:  # noqa: F811
    """Log-in by any spelling reaches the one account, and the failure limit counts them all
    together (a case or width variant is no fresh set of guesses)."""
    r = web.post("/api/auth/register", json={"email": "Ada@Example.org", "username": "Ada",
                                             "password": "long enough pw"})
    assert r.status_code == 201 and r.json()["username"] == "ada", r.text
    codes = [web.post("/api/auth/login", json={"username": name, "password": "wrong"}).status_code
             for name in ["ada", "ADA", "ａｄａ", "Ada ", "ADA@EXAMPLE.ORG."] * 2]
    blocked = web.post("/api/auth/login", json={"username": "aDa", "password": "long enough pw"})
    nul = web.post("/api/auth/login", json={"username": "ada\x00", "password": "x"})
    zw = web.post("/api/auth/login", json={"username": "a\u200bda", "password": "x"})
    ok = set(codes) == {401} and blocked.status_code == 429 and nul.status_code == 422 \
        and zw.status_code == 422
    figures.record("attacks", "api:login-spellings", kind="api", contained=ok,
                   outcome=f"10 wrong guesses over 5 spellings -> {sorted(set(codes))}; next -> "
                           f"{blocked.status_code}; NUL -> {nul.status_code}; zero-width -> "
                           f"{zw.status_code}")
    assert ok, (codes, blocked.text, nul.text, zw.text)


# --- 2. Control bytes ----------------------------------------------------------------------

CONTROLS = {"NUL": "\x00", "SOH": "\x01", "ESC": "\x1b", "DEL": "\x7f", "C1 CSI": "\x9b",
            "lone surrogate": "\ud800"}


def _json_body(payload: dict[str, Any]) -> bytes:
    """JSON with the control character as a \\u escape (a lone surrogate cannot be UTF-8)."""
    import json

    return json.dumps(payload, ensure_ascii=True).encode()


def _targets(db_session: Session) -> tuple[dict[str, str], dict[str, str], list[tuple]]:
    organizer, participant = f.make_user(db_session), f.make_user(db_session)
    ch = f.make_challenge(db_session, organizer)
    f.add_member(db_session, ch, participant, ChallengeRole.PARTICIPANT)
    phase = f.make_phase(db_session, ch)
    image = f.make_image(db_session, participant)
    org, par = f.auth(db_session, organizer), f.auth(db_session, participant)
    base = f"/api/challenges/{ch.slug}"
    # (who, method, url, body with "{X}" where the control character goes)
    return org, par, [
        (None, "post", "/api/auth/register", {"email": "x{X}@example.org", "username": "newbie",
                                              "password": "long enough pw"}),
        (None, "post", "/api/auth/register", {"email": "newbie@example.org",
                                              "username": "new{X}bie", "password": "long pw 12"}),
        (None, "post", "/api/auth/login", {"username": "someone{X}", "password": "x"}),
        ("par", "post", f"{base}/phases/{phase.slug}/submissions",
         {"image_id": image.id, "comment": "my run{X}"}),
        ("par", "post", "/api/images/uploads", {"name": "algo{X}:1", "size_bytes": 1000}),
        ("par", "post", "/api/auth/tokens", {"name": "cli{X}"}),
        ("org", "post", "/api/challenges", {"slug": "evil", "title": "T{X}"}),
        ("org", "patch", base, {"description": "about{X}"}),
        ("org", "post", f"{base}/phases", {"slug": "evil", "title": "Phase{X}"}),
        ("org", "patch", f"{base}/phases/{phase.slug}", {"title": "Phase{X}"}),
        ("org", "put", f"{base}/members", {"username": "someone{X}", "role": "participant"}),
        ("org", "post", "/api/datasets", {"slug": "evil", "title": "D{X}", "description": ""}),
        ("org", "patch", f"{base}/phases/{phase.slug}",
         {"extra_columns": [{"metric": "psnr{X}", "higher_is_better": True}]}),
    ]


def test_control_bytes_in_every_text_field(web: TestClient,  # noqa: F811
                                           db_session: Session) -> None:
    org, par, targets = _targets(db_session)
    before = {m.__name__: db_session.query(m).count()
              for m in (User, Challenge, Phase, Submission, ImageUpload)}
    failures: list[str] = []
    tried = 0
    for cname, ch in CONTROLS.items():
        for who, method, url, body in targets:
            headers = {**JSON, **({"org": org, "par": par}.get(who or "", {}))}
            fill = {k: (v.replace("{X}", ch) if isinstance(v, str) else v)
                    for k, v in (body or {}).items()}
            if "extra_columns" in fill:
                fill["extra_columns"] = [{"metric": f"psnr{ch}", "higher_is_better": True}]
            r = web.request(method.upper(), url, headers=headers, content=_json_body(fill))
            tried += 1
            if r.status_code != 422 or "control character" not in r.text:
                failures.append(f"{cname} {method} {url}: {r.status_code} {r.text[:120]}")
    # The same through a query string and the path (percent-encoded).
    for path in ("/api/challenges/a%00b", "/api/images?x=%00", "/challenges/a%00b",
                 "/api/challenges?q=%1b"):
        r = web.get(path, headers={**par, "accept": "application/json"})
        tried += 1
        if r.status_code != 422 or "control character" not in r.text:
            failures.append(f"GET {path}: {r.status_code} {r.text[:120]}")
    after = {m.__name__: db_session.query(m).count()
             for m in (User, Challenge, Phase, Submission, ImageUpload)}
    ok = not failures and before == after
    figures.record("attacks", "api:control-bytes", kind="api", contained=ok,
                   outcome=f"{tried} requests ({len(CONTROLS)} characters x {len(targets)} "
                           f"fields, path, query): all 422 naming the field; rows unchanged"
                   if ok else f"{failures[:3]}")
    assert ok, (failures, before, after)


def test_control_bytes_in_web_forms(web: TestClient, db_session: Session) -> None:  # noqa: F811
    """HTML forms: an error page that says which field, never a 500."""
    organizer = f.make_user(db_session)
    ch = f.make_challenge(db_session, organizer)
    phase = f.make_phase(db_session, ch)
    image = f.make_image(db_session, organizer)
    forms = [
        ("/login", {"username": "a\x00b", "password": "x"}),
        ("/register", {"username": "nul", "email": "n\x00@example.org", "password": "long pw 1"}),
        ("/manage/challenges/new", {"slug": "x", "title": "T\x00", "description": ""}),
        (f"/manage/challenges/{ch.slug}", {"title": "T", "description": "a\x00"}),
        (f"/manage/challenges/{ch.slug}/members", {"username": "u\x1b", "role": "participant"}),
        (f"/challenges/{ch.slug}/{phase.slug}/submit", {"image_id": str(image.id),
                                                       "comment": "c\x00"}),
    ]
    failures = []
    for url, data in forms:
        login(web, organizer)
        r = web.post(url, data={**data, "csrf_token": csrf_token(web)},
                     headers={"accept": "text/html"})
        if r.status_code != 422 or "control character" not in r.text \
                or "<html" not in r.text.lower():
            failures.append(f"{url}: {r.status_code} {r.text[:200]}")
    ok = not failures
    figures.record("attacks", "web:control-bytes-in-forms", kind="web", contained=ok,
                   outcome=f"{len(forms)} forms: 422 page naming the field" if ok
                   else str(failures[:2]))
    assert ok, failures


def test_container_logs_with_control_bytes_are_stored(db_session: Session) -> None:
    """What a container prints is stored (NUL made visible), never a database error."""
    from backend.submissions.state import cap_log

    organizer = f.make_user(db_session)
    phase = f.make_phase(db_session, f.make_challenge(db_session, organizer))
    sub = f.make_submission(db_session, phase, organizer)
    raw = "step 1\x00\x00 ok\x1b[31m red\x1b[0m\r\nbinary \x07\x08\x7f\x9b tail\ttab\n"
    sub.error_message = cap_log(raw)
    db_session.flush()
    db_session.refresh(sub)
    ok = "\x00" not in sub.error_message and "step 1" in sub.error_message \
        and "red" in sub.error_message and "\ttab\n" in sub.error_message \
        and "\ufffd" in sub.error_message
    figures.record("attacks", "api:log-control-bytes", kind="api", contained=ok,
                   outcome=f"stored as {sub.error_message!r}")
    assert ok, sub.error_message


# --- 3. Numbers that do not fit --------------------------------------------------------------

def test_bad_numbers_answer_422(web: TestClient, db_session: Session) -> None:  # noqa: F811
    organizer = f.make_user(db_session)
    ch = f.make_challenge(db_session, organizer)
    phase = f.make_phase(db_session, ch, f.make_dataset_version(db_session, ch))
    f.add_member(db_session, ch, f.make_user(db_session), ChallengeRole.PARTICIPANT)
    h = {**f.auth(db_session, organizer), **JSON}
    base = f"/api/challenges/{ch.slug}/phases/{phase.slug}"
    paths = [("GET", f"/api/images/{n}") for n in (2**31, 2**63, 2**64, 10**30)] + [
        ("GET", f"/api/submissions/{2**63}"), ("GET", f"/api/submissions/{2**31}/cases"),
        ("DELETE", f"/api/auth/tokens/{2**63}"), ("DELETE", f"/api/images/{2**31}"),
        ("GET", f"/api/datasets/x/versions/{2**63}/cases"),
    ]
    bodies = [
        ("post", f"{base}/submissions", b'{"image_id": 9223372036854775808}'),
        ("post", f"{base}/submissions", b'{"image_id": 2147483648}'),
        ("post", f"{base}/submissions", b'{"image_id": NaN}'),
        ("post", "/api/images/uploads", b'{"name": "a", "size_bytes": 18446744073709551616}'),
        ("post", "/api/images/uploads", b'{"name": "a", "size_bytes": Infinity}'),
        ("post", "/api/images/uploads", b'{"name": "a", "size_bytes": 1e400}'),
        ("patch", base, b'{"cpus": NaN}'),
        ("patch", base, b'{"cpus": -Infinity}'),
        ("patch", base, b'{"cpus": 1e400}'),
        ("patch", base, b'{"title": NaN}'),
        ("patch", base, b'{"submission_period_s": 99999999999}'),
        ("patch", base, b'{"dataset_version": 9223372036854775807}'),
        ("post", "/api/auth/tokens", b'{"name": "x", "expires_in_days": 1e400}'),
    ]
    failures = []
    for method, path in paths:
        r = web.request(method, path, headers=h)
        if r.status_code != 422 or "out of range" not in r.text:
            failures.append(f"{method} {path}: {r.status_code} {r.text[:100]}")
    # More digits than Python parses (4300): the body is refused as unparseable, not a 500.
    r = web.patch(base, headers=h, content=b'{"memory_mb": 1' + b"0" * 5000 + b"}")
    if r.status_code not in (400, 422):
        failures.append(f"5000 digits: {r.status_code} {r.text[:100]}")
    for method, url, body in bodies:
        r = web.request(method.upper(), url, headers=h, content=body)
        if r.status_code != 422:
            failures.append(f"{method} {url} {body[:60]!r}: {r.status_code} {r.text[:100]}")
    phase_row = db_session.get(Phase, phase.id)
    assert phase_row is not None
    ok = not failures and phase_row.cpus == phase.cpus
    summary = (f"{len(paths)} huge path ids, {len(bodies)} bodies (2^63, NaN, Infinity, "
               "1e400): all 422; 5000 digits: 400")
    figures.record("attacks", "api:bad-numbers", kind="api", contained=ok,
                   outcome=summary if ok else str(failures[:3]))
    assert ok, failures


def test_failed_upload_create_leaves_no_file(committed: Committed) -> None:  # noqa: F811
    """An upload whose row is refused (text the database cannot hold, reaching the service
    past the API's checks) or whose transaction fails at COMMIT leaves no part file."""
    from sqlalchemy import exc as sa_exc

    uploads = settings.uploads_dir
    s = committed.maker()
    try:
        user = s.get(User, committed.user_id)
        with pytest.raises(sa_exc.DataError):
            images_service.create_upload(s, user, UploadIn.model_construct(
                name="bad\x00name", size_bytes=10))
        s.rollback()
        upload = images_service.create_upload(s, user, UploadIn(name="ok", size_bytes=10))
        assert images_service.part_path(upload.id).exists()
        commit_after_connection_loss(committed, s)
        s.rollback()
    finally:
        s.close()
    left = sorted(p.name for p in uploads.glob("*.part")) if uploads.exists() else []
    ok = not left
    figures.record("attacks", "api:upload-create-leftovers", kind="api", contained=ok,
                   outcome="refused row and failed COMMIT: no part file left" if ok
                   else f"left: {left}")
    assert ok, left


# --- 4. Placeholder secrets ------------------------------------------------------------------

@pytest.mark.parametrize("key", ["", "change-me", "dev-insecure-secret-change-me"])
def test_server_refuses_placeholder_secret(key: str) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SYNTHARENA_") or k == "SYNTHARENA_DATA_DIR"}
    if key:
        env["SYNTHARENA_SECRET_KEY"] = key
    refused = subprocess.run([sys.executable, "-c", "import backend.main"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    dev = subprocess.run([sys.executable, "-c", "import backend.config"], cwd=ROOT,
                         env={**env, "SYNTHARENA_DEV_MODE": "1"}, capture_output=True,
                         text=True, timeout=120)
    said = next((line.strip() for line in refused.stderr.splitlines()
                 if "SYNTHARENA_SECRET_KEY" in line), "")
    ok = refused.returncode != 0 and bool(said) and dev.returncode == 0
    figures.record("attacks", f"config:placeholder-secret{'-' + key if key else '-unset'}",
                   kind="api", contained=ok,
                   outcome=f"the app refuses to start: {said[:110]}" if ok
                   else refused.stderr[-300:])
    assert ok, (refused.stderr[-500:], dev.stderr[-500:])
