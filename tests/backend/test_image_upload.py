from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.config import settings
from backend.images import service
from tests.backend import factories as f
from tests.backend.tarballs import make_image_tar


def _upload(client: TestClient, h: dict[str, str], data: bytes, chunk: int = 700,
            name: str = "algo:1") -> dict:  # type: ignore[type-arg]
    r = client.post("/api/images/uploads", json={"name": name, "size_bytes": len(data)},
                    headers=h)
    assert r.status_code == 201, r.text
    upload_id = r.json()["id"]
    for start in range(0, len(data), chunk):
        part = data[start:start + chunk]
        rng = f"bytes {start}-{start + len(part) - 1}/{len(data)}"
        r = client.put(f"/api/images/uploads/{upload_id}", content=part,
                       headers={**h, "Content-Range": rng})
        assert r.status_code == 200, r.text
    r = client.post(f"/api/images/uploads/{upload_id}/complete", headers=h)
    return {"status_code": r.status_code, **r.json()}


def test_upload_valid_image_and_duplicate(client: TestClient, db_session: Session,
                                          tmp_path: Path) -> None:
    import hashlib

    h = f.auth(db_session, f.make_user(db_session))
    data = make_image_tar(tmp_path / "i.tar.gz", compression="gz").read_bytes()
    out = _upload(client, h, data)
    assert out["status_code"] == 201 and out["status"] == "valid", out
    assert out["sha256"] == hashlib.sha256(data).hexdigest()
    assert out["compression"] == "gzip"
    stored = settings.images_dir / f"{out['sha256']}"
    assert any(p.name.startswith(out["sha256"]) for p in settings.images_dir.rglob("*"))
    assert not stored.exists() or stored.is_file()
    again = _upload(client, h, data, chunk=10_000, name="same")
    assert again["status_code"] == 200 and again["id"] == out["id"]
    assert "already uploaded" in again["notice"]
    listed = client.get("/api/images", headers=h).json()
    assert [i["id"] for i in listed] == [out["id"]]


def test_invalid_image_is_recorded_with_message(client: TestClient, db_session: Session,
                                                tmp_path: Path) -> None:
    h = f.auth(db_session, f.make_user(db_session))
    out = _upload(client, h, make_image_tar(tmp_path / "i.tar", user="root").read_bytes())
    assert out["status"] == "invalid" and "USER" in out["validation_message"]
    assert client.get(f"/api/images/{out['id']}", headers=h).json()["status"] == "invalid"


def test_resume_after_interruption(client: TestClient, db_session: Session,
                                   tmp_path: Path) -> None:
    h = f.auth(db_session, f.make_user(db_session))
    data = make_image_tar(tmp_path / "i.tar").read_bytes()
    upload_id = client.post("/api/images/uploads", json={"name": "a", "size_bytes": len(data)},
                            headers=h).json()["id"]
    total = len(data)
    client.put(f"/api/images/uploads/{upload_id}", content=data[:1000],
               headers={**h, "Content-Range": f"bytes 0-999/{total}"})
    # A retry from a wrong offset is refused and says where to resume.
    r = client.put(f"/api/images/uploads/{upload_id}", content=data[500:1500],
                   headers={**h, "Content-Range": f"bytes 500-1499/{total}"})
    assert r.status_code == 409 and "resume from byte 1000" in r.json()["detail"]
    # A new process would re-hash the prefix from disk: simulate by dropping the cache.
    service._hashers.clear()
    offset = client.get(f"/api/images/uploads/{upload_id}", headers=h).json()["received_bytes"]
    assert offset == 1000
    r = client.post(f"/api/images/uploads/{upload_id}/complete", headers=h)
    assert r.status_code == 409 and "incomplete" in r.json()["detail"]
    r = client.put(f"/api/images/uploads/{upload_id}", content=data[offset:],
                   headers={**h, "Content-Range": f"bytes {offset}-{total - 1}/{total}"})
    assert r.json()["received_bytes"] == total
    r = client.post(f"/api/images/uploads/{upload_id}/complete", headers=h)
    import hashlib

    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert r.json()["status"] == "valid"


def test_chunk_validation(client: TestClient, db_session: Session) -> None:
    h = f.auth(db_session, f.make_user(db_session))
    upload_id = client.post("/api/images/uploads", json={"name": "a", "size_bytes": 100},
                            headers=h).json()["id"]
    url = f"/api/images/uploads/{upload_id}"
    assert client.put(url, content=b"x", headers=h).status_code == 400
    r = client.put(url, content=b"x" * 20, headers={**h, "Content-Range": "bytes 0-9/100"})
    assert r.status_code == 400 and "longer" in r.json()["detail"]
    other = f.auth(db_session, f.make_user(db_session))
    r = client.put(url, content=b"x", headers={**other, "Content-Range": "bytes 0-0/100"})
    assert r.status_code == 404
    assert client.delete(url, headers=h).status_code == 204
    r = client.put(url, content=b"x", headers={**h, "Content-Range": "bytes 0-0/100"})
    assert r.status_code == 409


def test_size_limit_and_quota(client: TestClient, db_session: Session,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    h = f.auth(db_session, f.make_user(db_session))
    monkeypatch.setattr(settings, "max_image_bytes", 1000)
    monkeypatch.setattr(settings, "user_image_quota_bytes", 1500)
    r = client.post("/api/images/uploads", json={"name": "a", "size_bytes": 1001}, headers=h)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert client.post("/api/images/uploads", json={"name": "a", "size_bytes": 1000},
                       headers=h).status_code == 201
    r = client.post("/api/images/uploads", json={"name": "b", "size_bytes": 600}, headers=h)
    assert r.status_code == 413 and "quota" in r.json()["detail"]


def test_idle_uploads_expire_and_free_quota(client: TestClient, db_session: Session,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from backend.models import ImageUpload, UploadStatus, utcnow

    h = f.auth(db_session, f.make_user(db_session))
    monkeypatch.setattr(settings, "user_image_quota_bytes", 1500)
    first = client.post("/api/images/uploads", json={"name": "a", "size_bytes": 1000},
                        headers=h).json()["id"]
    upload = db_session.get(ImageUpload, first)
    assert upload is not None
    upload.updated_at = utcnow() - timedelta(seconds=settings.upload_expiry_s + 1)
    db_session.flush()
    r = client.post("/api/images/uploads", json={"name": "b", "size_bytes": 1000}, headers=h)
    assert r.status_code == 201
    db_session.refresh(upload)
    assert upload.status is UploadStatus.ABORTED
    assert not service.part_path(first).exists()
