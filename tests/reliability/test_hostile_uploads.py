"""Hostile image uploads through the API: each is rejected with a message that says what is
wrong, and nothing is left behind in storage (no image file, no partial upload)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.config import settings
from tests.backend import factories as f
from tests.backend.conftest import (  # noqa: F401  (fixtures)
    app,
    broker_url,
    cheap_password_hashing,
    client,
    data_dir,
)
from tests.backend.tarballs import make_image_tar
from tests.reliability import figures, image_tars


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def lying_config(path: Path) -> Path:
    """A config whose rootfs lists two layers while the manifest ships one."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        _add(t, "app/run.sh", b"#!/bin/sh\n")
    lid = hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "1000"},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [f"sha256:{lid}", f"sha256:{'0' * 64}"]}}).encode()
    digest = hashlib.sha256(config).hexdigest()
    with tarfile.open(path, "w") as tar:
        _add(tar, f"{lid}/layer.tar", layer.getvalue())
        _add(tar, f"{digest}.json", config)
        _add(tar, "manifest.json", json.dumps([{"Config": f"{digest}.json", "RepoTags": ["a:1"],
                                                "Layers": [f"{lid}/layer.tar"]}]).encode())
    return path


def decompression_bomb(path: Path) -> Path:
    """A 64 MB member of zeros (sizes add to over the limit) in a ~64 KB gzip file."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("bomb/layer.tar")
        info.size = 64 * 1024**2
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    path.write_bytes(gzip.compress(raw.getvalue(), compresslevel=9))
    return path


def escaping_name(path: Path) -> Path:
    info = tarfile.TarInfo("../../../etc/cron.d/evil")
    info.size = 4
    return make_image_tar(path, extra=[info])


def escaping_link(path: Path) -> Path:
    info = tarfile.TarInfo("innocent")
    info.type = tarfile.SYMTYPE
    info.linkname = "../../../../etc/shadow"
    return make_image_tar(path, extra=[info])


def truncated(path: Path) -> Path:
    make_image_tar(path, compression="gz", payload=os.urandom(20000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "user-root": (lambda p: make_image_tar(p, user="root"), "runs as root"),
    "user-0:0": (lambda p: make_image_tar(p, user="0:0"), "runs as root"),
    "no-user": (lambda p: make_image_tar(p, user=""), "no USER"),
    "two-images": (lambda p: make_image_tar(p, images=2), "image"),
    "config-lies-about-layers": (lying_config, "disagree on the number of"),
    "config-digest-mismatch": (lambda p: make_image_tar(p, bad_digest=True), "digest"),
    "missing-layer": (lambda p: make_image_tar(p, drop_layer=True), "missing"),
    "dotdot-member": (escaping_name, "escapes the archive"),
    "dotdot-link": (escaping_link, "points outside the archive"),
    "decompression-bomb": (decompression_bomb, "larger than"),
    "not-a-tarball": (lambda p: (p.write_bytes(os.urandom(5000)), p)[1], "not a tar archive"),
    "truncated": (truncated, ""),
    # Issue #15: uid 0 under other spellings, image configs that grant storage, archives the
    # engine cannot load, OCI layouts.
    "user-00": (lambda p: image_tars.user_image(p, "00"), "runs as root"),
    "user-+0": (lambda p: image_tars.user_image(p, "+0"), "runs as root"),
    "user-0:1000": (lambda p: image_tars.user_image(p, "0:1000"), "runs as root"),
    "user-:1000": (lambda p: image_tars.user_image(p, ":1000"), "runs as root"),
    "user-name-mapped-to-0": (lambda p: image_tars.user_image(p, "algorithm"),
                              "uid 0 in the image's own /etc/passwd"),
    "user-unparseable-uid": (lambda p: image_tars.user_image(
        p, "odd", passwd=b"odd:x:abc:1000::/:/bin/sh\n"), "runs as root"),
    "user-passwd-whited-out": (lambda p: image_tars.user_image(p, "bob", whiteout_later=True),
                               "no user 'bob'"),
    "user-not-in-passwd": (lambda p: image_tars.user_image(p, "ghost"), "no user 'ghost'"),
    "volume": (lambda p: image_tars.volume_image(p, ["/data"]), "Remove the VOLUME lines"),
    "many-layers": (image_tars.many_layers, "at most 125"),
    "layer-not-a-tar": (image_tars.layer_not_a_tar, "is not a tar archive"),
    "oci-layout": (image_tars.oci_layout, "skopeo copy oci-archive:"),
}


def _leftovers() -> list[Path]:
    return [p for d in (settings.images_dir, settings.uploads_dir) if d.exists()
            for p in d.rglob("*") if p.is_file()]


def _upload(client: TestClient, h: dict[str, str], data: bytes, name: str) -> dict:  # type: ignore[type-arg]  # noqa: F811
    r = client.post("/api/images/uploads", json={"name": name, "size_bytes": len(data)},
                    headers=h)
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    r = client.put(f"/api/images/uploads/{uid}", content=data,
                   headers={**h, "Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/images/uploads/{uid}/complete", headers=h)
    return {"status_code": r.status_code, **r.json()}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_upload_rejected_nothing_kept(kind: str, client: TestClient,  # noqa: F811
                                              db_session: Session, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "max_image_uncompressed_bytes", 16 * 1024**2)
    make, words = HOSTILE[kind]
    data = make(tmp_path / f"{kind}.tar").read_bytes()
    h = f.auth(db_session, f.make_user(db_session))
    out = _upload(client, h, data, kind)
    message = out.get("validation_message") or out.get("detail") or ""
    ok = (out.get("status") == "invalid" and words.lower() in message.lower()
          and len(message) > 20 and not _leftovers())
    figures.record("attacks", f"upload:{kind}", kind="upload", contained=ok,
                   outcome=message[:200], problems=[] if ok else [str(out), str(_leftovers())])
    assert out.get("status") == "invalid", out
    assert words.lower() in message.lower(), message
    assert not _leftovers(), _leftovers()


def test_resumed_upload_with_bad_chunks(client: TestClient, db_session: Session,  # noqa: F811
                                        tmp_path: Path) -> None:
    data = make_image_tar(tmp_path / "ok.tar", payload=os.urandom(5000)).read_bytes()
    total = len(data)
    h = f.auth(db_session, f.make_user(db_session))
    uid = client.post("/api/images/uploads", json={"name": "r", "size_bytes": total},
                      headers=h).json()["id"]
    url = f"/api/images/uploads/{uid}"
    put = lambda a, b, body, tot=total: client.put(  # noqa: E731
        url, content=body, headers={**h, "Content-Range": f"bytes {a}-{b}/{tot}"})
    assert put(0, 999, data[:1000]).status_code == 200
    checks = {
        "out-of-order chunk": put(2000, 2999, data[2000:3000]),
        "overlapping chunk": put(500, 1499, data[500:1500]),
        "chunk longer than its range": put(1000, 1099, data[1000:1300]),
        "wrong total size": put(1000, 1999, data[1000:2000], total + 7),
        "range past the end": put(1000, total + 50, data[1000:] + b"x" * 51),
    }
    results = {k: (r.status_code, r.json().get("detail", "")) for k, r in checks.items()}
    received = client.get(url, headers=h).json()["received_bytes"]
    ok = all(code in (400, 409, 413, 416) and len(msg) > 15 for code, msg in results.values())
    figures.record("attacks", "upload:bad-resume-chunks", kind="upload",
                   contained=ok and received in (1000, 1100),
                   outcome="; ".join(f"{k}: {c} {m[:60]}" for k, (c, m) in results.items()),
                   problems=[] if ok else [str(results)])
    assert ok, results
    # A rejected chunk never corrupts the prefix: resuming from received_bytes completes.
    assert received == 1000, received
    assert put(received, total - 1, data[received:]).status_code == 200
    r = client.post(f"{url}/complete", headers=h)
    assert r.json()["status"] == "valid" and r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    # An abandoned upload leaves nothing once aborted.
    uid2 = client.post("/api/images/uploads", json={"name": "x", "size_bytes": total},
                       headers=h).json()["id"]
    client.put(f"/api/images/uploads/{uid2}", content=data[:100],
               headers={**h, "Content-Range": f"bytes 0-99/{total}"})
    assert client.delete(f"/api/images/uploads/{uid2}", headers=h).status_code == 204
    assert not [p for p in settings.uploads_dir.rglob("*") if p.is_file()]
