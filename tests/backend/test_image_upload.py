from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from backend.config import settings
from backend.images import service
from backend.models import AlgorithmImage, ImageStatus, ImageUpload, UploadStatus, User
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


# Files are deleted only after the commit: each request below is made to fail at its commit
# for real (its connection is terminated by the server just before COMMIT); its rows roll
# back and must still find their files. The same request then succeeds.


@dataclass
class Committed:
    engine: Engine
    maker: sessionmaker[Session]
    user_id: int


@pytest.fixture
def committed(db_engine: Engine) -> Iterator[Committed]:
    """A user committed for real (requests here run in their own transactions)."""
    maker = sessionmaker(bind=db_engine, expire_on_commit=False)
    with maker.begin() as s:
        user_id = f.make_user(s).id
    yield Committed(db_engine, maker, user_id)
    with maker.begin() as s:
        s.execute(delete(User).where(User.id == user_id))  # uploads and images cascade


def commit_after_connection_loss(c: Committed, s: Session) -> None:
    """Terminates the session's database connection right before COMMIT, so the commit raises
    and everything rolls back (a real lost connection, not a mock)."""
    pid = s.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with c.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        admin.commit()
    with pytest.raises(sa_exc.OperationalError):
        s.commit()


def _request(c: Committed, action: Callable[[Session, User], object], *,
             commit_fails: bool) -> None:
    """One unit of work like a request's; with ``commit_fails`` the database connection is
    terminated right before COMMIT, so the commit raises and everything rolls back."""
    s = c.maker()
    try:
        user = s.get(User, c.user_id)
        assert user is not None
        action(s, user)
        if commit_fails:
            commit_after_connection_loss(c, s)
        else:
            s.commit()
    finally:
        s.rollback()
        s.close()


def _open_upload(c: Committed, data: bytes) -> str:
    """An upload with all its bytes received, as after the last chunk."""
    upload_id = uuid.uuid4().hex
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    service.part_path(upload_id).write_bytes(data)
    with c.maker.begin() as s:
        s.add(ImageUpload(id=upload_id, owner_id=c.user_id, name="algo", total_bytes=len(data),
                          received_bytes=len(data), status=UploadStatus.OPEN))
    return upload_id


def _upload_row(c: Committed, upload_id: str) -> tuple[str, int | None]:
    with c.maker() as s:
        upload = s.get(ImageUpload, upload_id)
        assert upload is not None
        return upload.status.value, upload.image_id


def _images(c: Committed) -> list[tuple[str, str]]:
    with c.maker() as s:
        return [(i.status.value, i.sha256) for i in
                s.scalars(select(AlgorithmImage).where(AlgorithmImage.owner_id == c.user_id))]


def test_abort_keeps_the_file_when_the_commit_fails(committed: Committed) -> None:
    upload_id = _open_upload(committed, b"x" * 1000)
    part = service.part_path(upload_id)

    def abort(s: Session, user: User) -> None:
        service.abort(s, user, upload_id)

    _request(committed, abort, commit_fails=True)
    assert _upload_row(committed, upload_id) == ("open", None)
    assert part.read_bytes() == b"x" * 1000  # the open upload still has its bytes
    _request(committed, abort, commit_fails=False)
    assert _upload_row(committed, upload_id) == ("aborted", None) and not part.exists()


@pytest.mark.parametrize("kind", ["duplicate", "invalid", "valid"])
def test_complete_keeps_the_file_when_the_commit_fails(committed: Committed, tmp_path: Path,
                                                       kind: str) -> None:
    data = make_image_tar(tmp_path / "i.tar", user="root" if kind == "invalid" else "1000",
                          payload=uuid.uuid4().bytes).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    existing = None
    if kind == "duplicate":
        with committed.maker.begin() as s:
            image = AlgorithmImage(owner_id=committed.user_id, name="earlier", sha256=sha,
                                   size_bytes=len(data), status=ImageStatus.VALID,
                                   storage_key=f"{committed.user_id}/{sha}.tar",
                                   validation_message="")
            s.add(image)
            s.flush()
            existing = image.id
    upload_id = _open_upload(committed, data)
    part = service.part_path(upload_id)
    images_before = _images(committed)

    def complete(s: Session, user: User) -> None:
        service.complete(s, user, upload_id)

    _request(committed, complete, commit_fails=True)
    assert _upload_row(committed, upload_id) == ("open", None)
    assert _images(committed) == images_before
    assert part.is_file() and part.read_bytes() == data  # complete can be called again
    _request(committed, complete, commit_fails=False)
    status, image_id = _upload_row(committed, upload_id)
    assert status == "complete" and image_id is not None and not part.exists()
    if kind == "duplicate":
        assert image_id == existing and _images(committed) == images_before
    else:
        assert _images(committed) == [("invalid" if kind == "invalid" else "valid", sha)]
    stored = list(settings.images_dir.rglob("*")) if settings.images_dir.exists() else []
    stored_files = [p for p in stored if p.is_file()]
    if kind == "valid":
        assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in stored_files] == [sha]
    else:
        assert stored_files == []


def test_deleting_an_image_keeps_its_file_when_the_commit_fails(committed: Committed,
                                                                tmp_path: Path) -> None:
    data = make_image_tar(tmp_path / "i.tar", payload=uuid.uuid4().bytes).read_bytes()
    upload_id = _open_upload(committed, data)
    _request(committed, lambda s, user: service.complete(s, user, upload_id),
             commit_fails=False)
    _, image_id = _upload_row(committed, upload_id)
    assert image_id is not None
    with committed.maker() as s:
        image = s.get(AlgorithmImage, image_id)
        assert image is not None
        stored = settings.images_dir / image.storage_key

    def delete_image(s: Session, user: User) -> None:
        service.delete_image(s, user, image_id)

    assert stored.is_file()
    _request(committed, delete_image, commit_fails=True)
    assert len(_images(committed)) == 1 and stored.is_file()
    _request(committed, delete_image, commit_fails=False)
    assert _images(committed) == [] and not stored.exists()


def test_chunk_spanning_many_write_blocks_is_stored_in_order(
        client: TestClient, db_session: Session, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One chunk arriving in uneven pieces across many write blocks (each written by a worker
    thread while the next arrives): the part file and the hash keep the bytes' order."""
    from backend.images import router

    monkeypatch.setattr(router, "WRITE_BLOCK", 4096)
    h = f.auth(db_session, f.make_user(db_session))
    data = make_image_tar(tmp_path / "i.tar", payload=bytes(range(251)) * 2000).read_bytes()
    upload_id = client.post("/api/images/uploads", json={"name": "a", "size_bytes": len(data)},
                            headers=h).json()["id"]
    half = len(data) // 2

    def pieces(lo: int, hi: int) -> Iterator[bytes]:
        sizes = (1, 999, 4095, 4097, 12_345)
        i = 0
        while lo < hi:
            n = min(sizes[i % len(sizes)], hi - lo)
            yield data[lo:lo + n]
            lo, i = lo + n, i + 1

    for lo, hi in ((0, half), (half, len(data))):
        r = client.put(f"/api/images/uploads/{upload_id}", content=pieces(lo, hi),
                       headers={**h, "Content-Range": f"bytes {lo}-{hi - 1}/{len(data)}",
                                "Content-Length": str(hi - lo)})
        assert r.status_code == 200 and r.json()["received_bytes"] == hi, r.text
    assert service.part_path(upload_id).read_bytes() == data
    out = client.post(f"/api/images/uploads/{upload_id}/complete", headers=h).json()
    assert out["status"] == "valid", out
    assert out["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_api_sweeps_idle_uploads_of_everyone(committed: Committed,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An abandoned upload (its owner never uploads again) is aborted by the API process's
    periodic sweep and its part deleted; an upload in use is left alone."""
    import time
    from datetime import timedelta

    from backend.main import create_app
    from backend.models import utcnow

    idle, busy = _open_upload(committed, b"i" * 500), _open_upload(committed, b"b" * 500)
    with committed.maker.begin() as s:
        upload = s.get(ImageUpload, idle)
        assert upload is not None
        upload.updated_at = utcnow() - timedelta(seconds=settings.upload_expiry_s + 60)
    from backend import db

    monkeypatch.setattr(db, "session_factory_override", committed.maker)  # real commits
    monkeypatch.setattr(settings, "upload_sweep_interval_s", 0.05)
    with TestClient(create_app()):  # its lifespan runs the sweeper
        deadline = time.monotonic() + 20
        while _upload_row(committed, idle)[0] == "open" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the part goes after the sweep's commit
    assert _upload_row(committed, idle) == ("aborted", None)
    assert not service.part_path(idle).exists()
    assert _upload_row(committed, busy) == ("open", None)
    assert service.part_path(busy).read_bytes() == b"b" * 500
