"""The hosts' object cache against a real S3-protocol server (moto's): a corrupt or partial
entry on disk is detected and fetched again (never handed out), least recently used entries
are evicted first (never one in use), objects stored without a checksum are still cached, and
several processes fetching one key at once download it once and all get the right bytes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend import object_cache, storage
from backend.config import settings
from backend.storage import data_storage
from tests.s3_server import S3Server, use_s3

pytest.importorskip("moto.server")

KEY = "inputs/ds/v1/1PA001/mri.mha"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    monkeypatch.setattr(settings, "data_dir", tmp_path / "host")
    monkeypatch.setattr(settings, "cache_max_bytes", 10 * 1024**2)
    try:
        use_s3(monkeypatch, server)
        yield server
    finally:
        server.stop()
        storage.clear_caches()


def _put(tmp_path: Path, key: str, data: bytes) -> bytes:
    src = tmp_path / "src" / key
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    data_storage().put_file(src, key)
    return data


def _fetch(key: str) -> bytes:
    with object_cache.local_file(key) as path:
        return path.read_bytes()


def _blob(key: str) -> Path:
    with object_cache.local_file(key) as path:
        return path


def _stats() -> dict[str, int]:
    return object_cache.cache().stats()


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_corrupt_entry_on_disk_is_fetched_again(s3: S3Server, tmp_path: Path,
                                                   damage: str) -> None:
    data = _put(tmp_path, KEY, os.urandom(300_000))
    assert _fetch(KEY) == data
    blob = _blob(KEY)  # a hit
    assert blob.name.endswith(".mha") and blob.name.startswith(hashlib.sha256(data).hexdigest())
    blob.chmod(0o644)
    with blob.open("r+b") as fh:
        if damage == "truncated":
            fh.truncate(1000)  # a partial entry
        else:
            fh.seek(123_456)
            fh.write(bytes([data[123_456] ^ 0xFF]))
    assert _fetch(KEY) == data  # detected, fetched again: never the damaged bytes
    stats = _stats()
    assert (stats["misses"], stats["hits"], stats["corrupt"]) == (2, 1, 1), stats
    assert stats["bytes_fetched"] == 2 * len(data)
    assert _fetch(KEY) == data and _stats()["hits"] == 2  # the new entry is whole


def test_objects_stored_without_a_checksum_are_cached_by_version(s3: S3Server) -> None:
    """Stored by another tool (no sha256 metadata): the first read records the checksum of
    what arrived for that version (ETag); a changed object is a new version, fetched again."""
    store: Any = data_storage()
    store.client.put_object(Bucket=store.bucket, Key=store.prefix + KEY, Body=b"v1" * 5000)
    assert _fetch(KEY) == b"v1" * 5000
    assert _fetch(KEY) == b"v1" * 5000
    store.client.put_object(Bucket=store.bucket, Key=store.prefix + KEY, Body=b"v2" * 5000)
    assert _fetch(KEY) == b"v2" * 5000
    stats = _stats()
    assert (stats["misses"], stats["hits"]) == (2, 1), stats


def test_least_recently_used_entries_are_evicted_first(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 1024**2
    monkeypatch.setattr(settings, "cache_max_bytes", 3 * size)  # room for three
    keys = [f"inputs/ds/v1/case{i}/mri.mha" for i in range(5)]
    data = {k: _put(tmp_path, k, os.urandom(size)) for k in keys}
    for k in keys[:3]:
        assert _fetch(k) == data[k]
    assert _fetch(keys[0]) == data[keys[0]]  # used again: now the most recent
    assert _fetch(keys[3]) == data[keys[3]]  # over the bound: keys[1] goes, not keys[0]
    present = {k for k in keys if _present(data[k])}
    assert present == {keys[0], keys[2], keys[3]}
    assert _stats()["evictions"] == 1 and _stats()["bytes_cached"] == 3 * size
    # An entry in use is never evicted, even when it is the least recently used.
    with object_cache.local_file(keys[2]) as held:
        for k in (keys[4], keys[1]):
            assert _fetch(k) == data[k]
        assert held.read_bytes() == data[keys[2]]
        assert _present(data[keys[2]])
    assert not _present(data[keys[0]]) and not _present(data[keys[3]])
    assert _stats()["evictions"] == 3


def _present(data: bytes) -> bool:
    sha = hashlib.sha256(data).hexdigest()
    return any((settings.object_cache_dir / "blobs" / sha[:2]).glob(sha + "*"))


def _child(config: dict[str, Any], key: str, barrier: Any, out: Any) -> None:
    for name, value in config.items():
        setattr(settings, name, value)
    barrier.wait()
    with object_cache.local_file(key) as path:
        out.put(hashlib.sha256(path.read_bytes()).hexdigest())


def test_concurrent_fetches_of_one_key_download_it_once(s3: S3Server, tmp_path: Path) -> None:
    data = _put(tmp_path, KEY, os.urandom(8 * 1024**2))
    names = ["storage_backend", "s3_endpoint_url", "s3_bucket", "s3_region", "s3_prefix",
             "s3_access_key_id", "s3_secret_access_key", "data_dir", "cache_max_bytes"]
    config = {n: getattr(settings, n) for n in names}
    ctx = multiprocessing.get_context("spawn")  # fresh processes, as Celery's children
    n = 6
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(config, KEY, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * n
    digests = [out.get(timeout=5) for _ in range(n)]
    assert digests == [hashlib.sha256(data).hexdigest()] * n
    stats = _stats()
    assert (stats["misses"], stats["hits"], stats["bytes_fetched"]) == (1, n - 1, len(data))
    assert stats["entries"] == 1 and not list((settings.object_cache_dir / "tmp").iterdir())
