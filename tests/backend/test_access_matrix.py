"""Every API endpoint × every role, with the expected status code.

Roles: anonymous; outsider (logged in, not in the challenge); participant (owns the
submission, image, upload and token under test); other (another participant); organizer;
admin (site administrator, not a member). The phase hides its leaderboard and per-case
results, so participants must not reach them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from backend.auth.service import create_token
from backend.main import create_app
from backend.models import (
    ChallengeRole,
    ImageUpload,
    ImportJob,
    SubmissionStatus,
    UploadStatus,
)
from tests.backend import factories as f

ROLES = ("anon", "outsider", "participant", "other", "organizer", "admin")


@dataclass
class World:
    ids: dict[str, Any]
    headers: dict[str, dict[str, str]]


def _codes(*codes: int) -> dict[str, int]:
    return dict(zip(ROLES, codes, strict=True))


ALL = lambda c: _codes(c, c, c, c, c, c)  # noqa: E731
LOGGED_IN = lambda c: _codes(401, c, c, c, c, c)  # noqa: E731
ORGANIZERS = lambda c: _codes(401, 403, 403, 403, c, c)  # noqa: E731
OWNER = lambda c: _codes(401, 404, c, 404, 404, 404)  # noqa: E731
SUB_ORG = lambda c: _codes(401, 404, 403, 404, c, c)  # noqa: E731
SUB_OWNER_OR_ORG = lambda c: _codes(401, 404, c, 404, c, c)  # noqa: E731

Body = Callable[[World], dict[str, Any] | None]
MATRIX: list[tuple[str, str, Body, dict[str, int]]] = [
    ("POST", "/api/auth/register", lambda w: {
        "email": f"n{f.uid()}@example.org", "username": f"n{f.uid()}",
        "password": "long enough"}, ALL(201)),
    ("POST", "/api/auth/login", lambda w: {"username": w.ids["username"],
                                           "password": f.PASSWORD}, ALL(200)),
    ("POST", "/api/auth/logout", lambda w: None, ALL(204)),
    ("GET", "/api/auth/me", lambda w: None, LOGGED_IN(200)),
    ("POST", "/api/auth/tokens", lambda w: {"name": "x"}, LOGGED_IN(201)),
    ("GET", "/api/auth/tokens", lambda w: None, LOGGED_IN(200)),
    ("DELETE", "/api/auth/tokens/{token}", lambda w: None, OWNER(200)),
    ("GET", "/api/challenges", lambda w: None, ALL(200)),
    ("POST", "/api/challenges", lambda w: {"slug": f"c{f.uid()}", "title": "t"},
     _codes(401, 403, 403, 403, 403, 201)),
    ("GET", "/api/challenges/{slug}", lambda w: None, ALL(200)),
    ("PATCH", "/api/challenges/{slug}", lambda w: {"title": "new"}, ORGANIZERS(200)),
    ("POST", "/api/challenges/{slug}/register", lambda w: None, LOGGED_IN(200)),
    ("GET", "/api/challenges/{slug}/members", lambda w: None, ORGANIZERS(200)),
    ("PUT", "/api/challenges/{slug}/members", lambda w: {
        "username": w.ids["other_username"], "role": "participant"}, ORGANIZERS(200)),
    ("GET", "/api/challenges/{slug}/phases", lambda w: None, ALL(200)),
    ("POST", "/api/challenges/{slug}/phases", lambda w: {"slug": "new", "title": "New"},
     ORGANIZERS(201)),
    ("GET", "/api/challenges/{slug}/phases/{phase}", lambda w: None, ALL(200)),
    ("PATCH", "/api/challenges/{slug}/phases/{phase}", lambda w: {"memory_mb": 2048},
     ORGANIZERS(200)),
    ("GET", "/api/datasets", lambda w: None, LOGGED_IN(200)),
    ("POST", "/api/datasets", lambda w: {"slug": f"d{f.uid()}", "title": "t",
                                         "challenge": w.ids["slug"]}, ORGANIZERS(201)),
    ("GET", "/api/datasets/{dataset}", lambda w: None, ORGANIZERS(200)),
    ("POST", "/api/datasets/{dataset}/versions", lambda w: {
        "source": "phantom", "anatomy": "brain", "cases": 1}, ORGANIZERS(201)),
    ("GET", "/api/datasets/{dataset}/versions/1/cases", lambda w: None, ORGANIZERS(200)),
    ("POST", "/api/datasets/{dataset}/imports", lambda w: {
        "source": "phantom", "anatomy": "brain", "cases": 1}, ORGANIZERS(202)),
    ("GET", "/api/datasets/{dataset}/imports/{import_job}", lambda w: None, ORGANIZERS(200)),
    ("POST", "/api/images/uploads", lambda w: {"name": "a", "size_bytes": 10},
     LOGGED_IN(201)),
    ("GET", "/api/images/uploads/{upload}", lambda w: None, OWNER(200)),
    ("PUT", "/api/images/uploads/{upload}", lambda w: None, OWNER(200)),
    ("POST", "/api/images/uploads/{upload}/complete", lambda w: None, OWNER(409)),
    ("DELETE", "/api/images/uploads/{upload}", lambda w: None, OWNER(204)),
    ("GET", "/api/images", lambda w: None, LOGGED_IN(200)),
    ("GET", "/api/images/{image}", lambda w: None, _codes(401, 404, 200, 404, 404, 200)),
    ("DELETE", "/api/images/{spare_image}", lambda w: None,
     _codes(401, 404, 204, 404, 404, 204)),
    ("POST", "/api/challenges/{slug}/phases/{phase}/submissions",
     lambda w: {"image_id": w.ids["spare_image"]}, _codes(401, 403, 201, 404, 404, 404)),
    ("GET", "/api/challenges/{slug}/phases/{phase}/submissions", lambda w: None,
     LOGGED_IN(200)),
    ("GET", "/api/submissions/{sub}", lambda w: None, _codes(401, 404, 200, 404, 200, 200)),
    ("PATCH", "/api/submissions/{sub}", lambda w: {"is_hidden": True}, SUB_ORG(200)),
    ("GET", "/api/submissions/{sub}/cases", lambda w: None, SUB_ORG(200)),
    # The case has no stored dose views: organisers learn that (404), the participant is
    # refused first (the phase hides per-case results).
    ("GET", "/api/submissions/{sub}/cases/{case}/dose", lambda w: None, SUB_ORG(404)),
    ("POST", "/api/submissions/{active_sub}/cancel", lambda w: None, SUB_OWNER_OR_ORG(200)),
    ("POST", "/api/submissions/{sub}/reevaluate", lambda w: None, SUB_ORG(200)),
    ("GET", "/api/challenges/{slug}/phases/{phase}/leaderboard", lambda w: None,
     _codes(403, 403, 403, 403, 200, 200)),
    ("GET", "/api/challenges/{slug}/phases/{phase}/leaderboard.csv", lambda w: None,
     _codes(403, 403, 403, 403, 200, 200)),
    ("GET", "/api/health", lambda w: None, ALL(200)),
]


def _world(db: Session) -> World:
    org, admin = f.make_user(db), f.make_user(db, admin=True)
    participant, other, outsider = f.make_user(db), f.make_user(db), f.make_user(db)
    ch = f.make_challenge(db, org)
    f.add_member(db, ch, participant)
    f.add_member(db, ch, other, ChallengeRole.PARTICIPANT)
    version = f.make_dataset_version(db, ch)
    from backend.models import Dataset

    dataset = db.get(Dataset, version.dataset_id)
    assert dataset is not None
    phase = f.make_phase(db, ch, version, leaderboard_public=False, show_case_results=False)
    phase2 = f.make_phase(db, ch, version)
    image = f.make_image(db, participant)
    spare = f.make_image(db, participant)
    sub = f.make_submission(db, phase, participant, image, metrics={"mae": 1.0})
    active = f.make_submission(db, phase2, participant, image, status=SubmissionStatus.RUNNING)
    upload = ImageUpload(id=f"up{f.uid()}", owner_id=participant.id, name="x", total_bytes=10,
                         received_bytes=0, status=UploadStatus.OPEN)
    db.add(upload)
    import_job = ImportJob(dataset_id=dataset.id, source="phantom:brain", spec={},
                           errors=[], imported={})
    db.add(import_job)
    token, _ = create_token(db, participant, "victim", None)
    db.flush()
    from backend.config import settings

    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    (settings.uploads_dir / f"{upload.id}.part").touch()
    headers = {"anon": {}}
    for role, user in (("outsider", outsider), ("participant", participant), ("other", other),
                       ("organizer", org), ("admin", admin)):
        headers[role] = f.auth(db, user)
    return World(
        ids={"slug": ch.slug, "phase": phase.slug, "dataset": dataset.slug, "sub": sub.id,
             "active_sub": active.id, "image": image.id, "spare_image": spare.id,
             "upload": upload.id, "token": token.id, "username": participant.username,
             "other_username": other.username, "import_job": import_job.id,
             "case": "1BA000"},
        headers=headers,
    )


@pytest.mark.parametrize(("method", "path", "body", "codes"), MATRIX,
                         ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_endpoint_by_role(client: TestClient, db_session: Session, db_connection: Connection,
                          method: str, path: str, body: Body, codes: dict[str, int]) -> None:
    world = _world(db_session)
    url = path.format(**world.ids)
    answers: dict[str, int] = {}
    for role in ROLES:
        savepoint = db_connection.begin_nested()  # each role starts from the same world
        headers = dict(world.headers[role])
        kwargs: dict[str, Any] = {"headers": headers}
        if method == "PUT" and "/uploads/" in path:
            headers["Content-Range"] = "bytes 0-4/10"
            kwargs["content"] = b"12345"
        elif (payload := body(world)) is not None:
            kwargs["json"] = payload
        client.cookies.clear()
        response = client.request(method, url, **kwargs)
        answers[role] = response.status_code
        if response.status_code >= 400:
            assert isinstance(response.json()["detail"], str | list)
        savepoint.rollback()
    assert answers == codes


def test_matrix_covers_every_endpoint() -> None:
    spec = create_app().openapi()["paths"]
    routes = {(m.upper(), p) for p, ops in spec.items() for m in ops}
    named = {"{token}": "{token_id}", "{phase}": "{phase_slug}", "{dataset}": "{slug}",
             "{sub}": "{submission_id}", "{active_sub}": "{submission_id}",
             "{image}": "{image_id}", "{spare_image}": "{image_id}",
             "{upload}": "{upload_id}", "{case}": "{case_name}", "{import_job}": "{job_id}",
             "/versions/1/": "/versions/{version}/"}
    covered = set()
    for method, path, _, _ in MATRIX:
        for short, real in named.items():
            path = path.replace(short, real)
        covered.add((method, path))
    assert routes - covered == set()
