"""Each host's local cache of objects read from S3: content-addressed, sha256-checked,
size-bounded (least recently used evicted), safe for several processes at once.

    with local_file("inputs/ds/v1/1PA001/mr.mha") as path: ...

Layout under ``settings.object_cache_dir``::

    blobs/ab/abcdef...   one file per content (named by its sha256), read-only
    index/<id>           the sha256 of (store, key, version) once fetched: objects stored
                         without a checksum are still found without a download
    locks/<sha>.lock     one fetch per content at a time (fcntl locks)
    tmp/                 downloads in progress (renamed into blobs/ once checked)
    derived/             files a worker made from blobs (uncompressed inputs): evicted alike
    stats.json           hit/miss counters of every process of this host

A path handed out is held with a shared lock on its blob until the ``with`` ends: eviction
takes an exclusive lock first and skips what is in use. A blob is checked against its sha256
on every hit; a corrupt or partial one is deleted and fetched again, never handed out. With the
local backend there is no cache: the store's own file is used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from backend.config import settings
from backend.storage import (
    HASH_CHUNK,
    ObjectInfo,
    Storage,
    StorageUnavailableError,
    storage_for,
)

log = logging.getLogger(__name__)

DERIVED = "derived"
COUNTERS = ("hits", "misses", "corrupt", "evictions", "bytes_fetched")
STALE_DOWNLOAD_S = 24 * 3600
FETCH_ATTEMPTS = 2  # a download whose bytes do not match the stored checksum is tried again


class CorruptObjectError(StorageUnavailableError):
    """The bytes the storage sent do not match the checksum recorded when it was stored."""


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    """Yields whether the lock was taken (always, unless ``mode`` has LOCK_NB)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


class ObjectCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        for sub in ("blobs", "index", "locks", "tmp", DERIVED):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def open(self, store: Storage, key: str) -> Iterator[Path]:
        """A local file with the object's bytes, valid until the ``with`` ends. Raises
        FileNotFoundError (no such object) or StorageUnavailableError (may pass)."""
        own = store.local_path(key)
        if own is not None:
            if not own.is_file():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(own))
            yield own
            return
        info = store.head(key)
        fd, path = self._acquire(store, key, info)
        try:
            yield path
        finally:
            os.close(fd)

    def _index_file(self, store: Storage, key: str, info: ObjectInfo) -> Path:
        ident = f"{store.where(key)}\0{info.version}\0{info.size}"
        return self.root / "index" / hashlib.sha256(ident.encode()).hexdigest()

    def blob(self, name: str) -> Path:
        """A blob by its name: the sha256 of its bytes and the key's suffix (readers such as
        SimpleITK choose the format by it)."""
        return self.root / "blobs" / name[:2] / name

    def _acquire(self, store: Storage, key: str, info: ObjectInfo) -> tuple[int, Path]:
        index = self._index_file(store, key, info)
        expected = info.sha256 or _read_text(index)
        suffix = _suffix(key)
        lock_name = expected + suffix if expected else index.name
        with _flock(self.root / "locks" / f"{lock_name}.lock", fcntl.LOCK_EX):
            if expected:
                held = self._checked(expected + suffix, expected, info.size)
                if held is not None:
                    self._count(hits=1)
                    log.info("object cache hit: %s (%s)", key, expected[:12])
                    return held, self.blob(expected + suffix)
            sha = self._download(store, key, info, suffix)
            if not info.sha256:
                _write_atomic(index, sha)
            fd = os.open(self.blob(sha + suffix), os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_SH)
        self.evict(keep=sha + suffix)
        return fd, self.blob(sha + suffix)

    def _checked(self, name: str, sha: str, size: int) -> int | None:
        """An open, share-locked descriptor of the blob when it is whole and correct; a blob
        that is not (a partial write, a flipped bit) is deleted."""
        path = self.blob(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.fstat(fd).st_size == size and _fd_sha256(fd) == sha:
            now = time.time_ns()
            with contextlib.suppress(OSError):  # the recency that eviction orders by
                os.utime(path, ns=(now, now))
            return fd
        os.close(fd)
        log.warning("object cache: %s is corrupt or partial; fetching it again", path.name)
        self._count(corrupt=1)
        path.unlink(missing_ok=True)
        return None

    def _download(self, store: Storage, key: str, info: ObjectInfo, suffix: str) -> str:
        """Fetch into tmp/, check size and checksum, rename into blobs/. Returns the sha256."""
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            tmp = self.root / "tmp" / f"{uuid.uuid4().hex}.part"
            try:
                digest = hashlib.sha256()
                with tmp.open("wb") as out:
                    store.download(key, _Hashing(out, digest))  # type: ignore[arg-type]
                size, sha = tmp.stat().st_size, digest.hexdigest()
                if size != info.size or (info.sha256 and sha != info.sha256):
                    raise CorruptObjectError(
                        f"{store.where(key)} arrived with {size} bytes and sha256 {sha[:12]}, "
                        f"not the {info.size} bytes and sha256 {(info.sha256 or '?')[:12]} "
                        "it was stored with")
                tmp.chmod(0o444)  # world-readable (containers read hard links of inputs)
                self.blob(sha + suffix).parent.mkdir(exist_ok=True)
                os.replace(tmp, self.blob(sha + suffix))
            except CorruptObjectError as exc:
                tmp.unlink(missing_ok=True)
                if attempt == FETCH_ATTEMPTS:
                    raise
                log.warning("object cache: %s; fetching again", exc.strerror)
                continue
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self._count(misses=1, bytes_fetched=size)
            log.info("object cache miss: %s fetched (%d bytes, %s)", key, size, sha[:12])
            return sha
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ eviction

    def evict(self, keep: str = "") -> int:
        """Delete least recently used blobs until the cache is within its size; blobs in use
        (a shared lock held, or hard-linked into a run directory) stay. Returns bytes freed."""
        with _flock(self.root / "locks" / ".evict", fcntl.LOCK_EX):
            stale = time.time() - STALE_DOWNLOAD_S
            for part in (self.root / "tmp").glob("*.part"):  # left by a killed download
                with contextlib.suppress(FileNotFoundError):
                    if part.stat().st_mtime < stale:
                        part.unlink()
            entries = []
            for path in [*(self.root / "blobs").glob("*/*"), *(self.root / DERIVED).glob("*")]:
                if ".tmp" in path.name:
                    continue  # a derived file being written (renamed into place when done)
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    entries.append((st.st_mtime_ns, path, st.st_size, st.st_nlink))
            total = sum(e[2] for e in entries)
            freed = 0
            for _, path, size, links in sorted(entries):
                if total <= self.max_bytes:
                    break
                if path.name == keep or links > 1:
                    continue
                if self._remove_unused(path):
                    total -= size
                    freed += size
                    self._count(evictions=1)
                    log.info("object cache: evicted %s (%d bytes)", path.name[:12], size)
            if total > self.max_bytes:
                log.warning("object cache holds %d bytes in use, above its %d-byte bound",
                            total, self.max_bytes)
            return freed

    def _remove_unused(self, path: Path) -> bool:
        lock = self.root / "locks" / f"{path.name}.lock"
        with _flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB) as fetch_free:
            if not fetch_free:
                return False
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a reader holds it
            else:
                path.unlink(missing_ok=True)
                return True
            finally:
                os.close(fd)

    # ------------------------------------------------------------------ counters

    def _count(self, **add: int) -> None:
        with _flock(self.root / "locks" / ".stats", fcntl.LOCK_EX):
            stats = self.stats(counters_only=True)
            for name, n in add.items():
                stats[name] = stats.get(name, 0) + n
            _write_atomic(self.root / "stats.json", json.dumps(stats))

    def stats(self, *, counters_only: bool = False) -> dict[str, int]:
        """Counters of every process that used this cache (since it was created), and, unless
        ``counters_only``, the entries and bytes it holds now. Hit rate: hits / (hits +
        misses); ``corrupt`` entries were found damaged on disk and fetched again."""
        raw = _read_text(self.root / "stats.json")
        stats = {name: 0 for name in COUNTERS}
        if raw:
            with contextlib.suppress(ValueError):
                stats.update({k: int(v) for k, v in json.loads(raw).items()})
        if not counters_only:
            sizes = []
            for path in [*(self.root / "blobs").glob("*/*"), *(self.root / DERIVED).glob("*")]:
                with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
                    sizes.append(path.stat().st_size)
            stats["entries"], stats["bytes_cached"] = len(sizes), sum(sizes)
            stats["max_bytes"] = self.max_bytes
        return stats


class _Hashing:
    """A writable file that hashes what passes through it."""

    def __init__(self, out: Any, digest: Any) -> None:
        self.out, self.digest = out, digest

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return int(self.out.write(data))


def _suffix(key: str) -> str:
    """``.mha``, ``.nii.gz``, ``.tar.gz``: the key's last two suffixes when plain."""
    suffixes = PurePosixPath(key).suffixes[-2:]
    if len(suffixes) == 2 and suffixes[1] not in (".gz", ".xz", ".bz2"):
        suffixes = suffixes[1:]
    text = "".join(suffixes)
    return text if len(text) <= 16 and text.replace(".", "").isalnum() else ""


def _fd_sha256(fd: int) -> str:
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while chunk := os.read(fd, HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(text)
    os.replace(tmp, path)


@lru_cache(maxsize=4)
def _cache(root: Path, max_bytes: int) -> ObjectCache:
    return ObjectCache(root, max_bytes)


def cache() -> ObjectCache:
    """This host's cache (``cache_dir``, ``cache_max_bytes``)."""
    return _cache(settings.object_cache_dir, settings.cache_max_bytes)


def local_file(key: str, store: Storage | None = None) -> contextlib.AbstractContextManager[Path]:
    """A local file with the bytes of a data key (``inputs/``, ``predictions/``,
    ``groundtruth/``), or of ``key`` in ``store``."""
    return cache().open(store or storage_for(key), key)


@contextlib.contextmanager
def local_folder(prefix: str, dest: Path) -> Iterator[Path]:
    """The objects under a data folder ``prefix`` (ends with '/') as files under ``dest``
    (hard links of cached blobs; the store's own folder with the local backend)."""
    store = storage_for(prefix)
    own = store.local_path(prefix)
    if own is not None:
        yield own
        return
    with contextlib.ExitStack() as stack:
        for key in store.keys(prefix):
            path = stack.enter_context(cache().open(store, key))
            target = dest / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                import shutil

                shutil.copyfile(path, target)
        yield dest
