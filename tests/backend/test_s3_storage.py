"""The S3 image storage against a real S3-protocol server (moto's, over HTTP on loopback):
multipart upload, download into the worker's cache, prefixes, missing keys, and an
endpoint that goes away (a clear 503 with the upload kept, then completing works)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend import storage
from backend.storage import S3Storage, StorageUnavailableError
from tests.backend import factories as f
from tests.backend.tarballs import make_image_tar
from tests.s3_server import S3Server, use_s3

pytest.importorskip("moto.server")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    try:
        use_s3(monkeypatch, server)
        yield server
    finally:
        server.stop()
        storage.get_storage.cache_clear()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_through_the_bucket(s3: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "image.tar.gz"
    src.write_bytes(os.urandom(20 * 1024 * 1024))  # above boto3's 8 MB multipart threshold
    store = S3Storage()
    store.put_file(src, "7/abc.tar.gz")
    assert store.exists("7/abc.tar.gz") and not store.exists("7/other.tar.gz")
    listed = store.client.list_objects_v2(Bucket="images")["Contents"]
    assert [o["Key"] for o in listed] == ["arena/7/abc.tar.gz"]  # under the prefix
    cache = tmp_path / "cache"
    local = store.local_copy("7/abc.tar.gz", cache)
    assert local.is_relative_to(cache) and _sha(local) == _sha(src)
    assert not list(cache.rglob("*.part"))
    store.delete("7/abc.tar.gz")
    assert not store.exists("7/abc.tar.gz")
    assert store.local_copy("7/abc.tar.gz", cache) == local  # the worker's cached copy
    with pytest.raises(FileNotFoundError, match=re.escape("s3://images/arena/7/gone.tar.gz")):
        store.local_copy("7/gone.tar.gz", cache)
    assert not list(cache.rglob("*.part"))


def test_an_unreachable_endpoint_is_a_storage_fault(s3: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "x.tar"
    src.write_bytes(b"x" * 1000)
    store = S3Storage()
    s3.stop()
    with pytest.raises(StorageUnavailableError, match="could not store s3://images/arena/1/x"):
        store.put_file(src, "1/x.tar")
    with pytest.raises(StorageUnavailableError, match="could not check"):
        store.exists("1/x.tar")  # not "missing": the storage did not answer
    with pytest.raises(StorageUnavailableError, match="could not read"):
        store.local_copy("1/x.tar", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_complete_while_the_storage_is_down_keeps_the_upload(
    s3: S3Server, client: TestClient, db_session: Session, tmp_path: Path
) -> None:
    user = f.make_user(db_session)
    h = f.auth(db_session, user)
    data = make_image_tar(tmp_path / "i.tar.gz", compression="gz").read_bytes()
    r = client.post("/api/images/uploads", json={"name": "algo:1", "size_bytes": len(data)},
                    headers=h)
    upload_id = r.json()["id"]
    r = client.put(f"/api/images/uploads/{upload_id}", content=data,
                   headers={**h, "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
    assert r.status_code == 200, r.text
    s3.stop()
    r = client.post(f"/api/images/uploads/{upload_id}/complete", headers=h)
    assert r.status_code == 503, r.text
    assert "could not store" in r.json()["detail"] and "upload is kept" in r.json()["detail"]
    assert client.get("/api/images", headers=h).json() == []
    s3.start()  # the same endpoint is back (moto starts empty: the bucket again)
    S3Storage().client.create_bucket(Bucket="images")
    r = client.post(f"/api/images/uploads/{upload_id}/complete", headers=h)
    assert r.status_code == 201, r.text
    image = r.json()
    assert image["status"] == "valid"
    assert S3Storage().exists(f"{user.id}/{image['sha256']}.tar.gz")
