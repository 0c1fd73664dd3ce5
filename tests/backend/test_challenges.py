from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.backend import factories as f


def test_admin_creates_challenge_and_phase(client: TestClient, db_session: Session) -> None:
    admin = f.make_user(db_session, admin=True)
    h = f.auth(db_session, admin)
    version = f.make_dataset_version(db_session)
    r = client.post("/api/challenges", json={"slug": "synthrad", "title": "SynthRAD"}, headers=h)
    assert r.status_code == 201 and r.json()["my_role"] == "organizer"
    from backend.models import Dataset

    ds = db_session.get(Dataset, version.dataset_id)
    assert ds is not None
    r = client.post("/api/challenges/synthrad/phases", headers=h, json={
        "slug": "validation", "title": "Validation", "kind": "validation",
        "dataset": ds.slug, "is_open": True, "submissions_per_period": 2,
        "primary_metric": "mae", "extra_columns": [{"metric": "psnr",
                                                     "higher_is_better": True}],
        "gpu_required": True, "batch_size": 4, "memory_mb": 4096, "cpus": 2,
        "case_time_limit_s": 300, "show_case_results": True,
    })
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["dataset_version_id"] == version.id and body["accepting_submissions"]
    assert body["extra_columns"] == [{"metric": "psnr", "higher_is_better": True}]
    r = client.patch("/api/challenges/synthrad/phases/validation", headers=h,
                     json={"is_open": False, "submission_period_s": 0})
    assert r.json()["is_open"] is False and r.json()["submission_period_s"] is None
    dup = client.post("/api/challenges/synthrad/phases", headers=h,
                      json={"slug": "validation", "title": "again"})
    assert dup.status_code == 409
    bad = client.patch("/api/challenges/synthrad/phases/validation", headers=h,
                       json={"opens_at": "2030-01-02T00:00:00Z",
                             "closes_at": "2030-01-01T00:00:00Z"})
    assert bad.status_code == 400 and "closes_at" in bad.json()["detail"]


def test_participant_registers_and_cannot_manage(client: TestClient, db_session: Session) -> None:
    org = f.make_user(db_session)
    challenge = f.make_challenge(db_session, org)
    user = f.make_user(db_session)
    h = f.auth(db_session, user)
    r = client.post(f"/api/challenges/{challenge.slug}/register", headers=h)
    assert r.json()["role"] == "participant"
    assert client.get(f"/api/challenges/{challenge.slug}", headers=h).json()["my_role"] == \
        "participant"
    r = client.post(f"/api/challenges/{challenge.slug}/phases", headers=h,
                    json={"slug": "x", "title": "x"})
    assert r.status_code == 403
    assert client.post("/api/challenges", headers=h,
                       json={"slug": "mine", "title": "t"}).status_code == 403


def test_private_challenge_is_invisible(client: TestClient, db_session: Session) -> None:
    org = f.make_user(db_session)
    challenge = f.make_challenge(db_session, org, public=False)
    outsider = f.auth(db_session, f.make_user(db_session))
    assert client.get(f"/api/challenges/{challenge.slug}", headers=outsider).status_code == 404
    slugs = [c["slug"] for c in client.get("/api/challenges", headers=outsider).json()]
    assert challenge.slug not in slugs
    r = client.put(f"/api/challenges/{challenge.slug}/members", headers=f.auth(db_session, org),
                   json={"username": org.username, "role": "organizer"})
    assert r.status_code == 200
