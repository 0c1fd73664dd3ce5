"""Where the platform's files live: the local filesystem (the single-machine default) or
S3-compatible object storage, behind one interface.

Three stores, by what they hold:

- ``get_storage()``: validated algorithm image tarballs (keys ``<user>/<sha>.tar[.gz]``).
- ``data_storage()``: case inputs (``inputs/...``) and predictions (``predictions/...``).
- ``groundtruth_storage()``: ground truth (``groundtruth/...``), with its own S3 credentials
  and prefix (``gt_s3_*``) that workers running participant containers never hold.

Keys of the data and ground-truth stores are the paths the database keeps (relative to
``data_dir``), so with the local backend the files sit where they always did. Hosts read S3
objects through ``backend.object_cache`` (a checked, bounded local cache).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

from backend.config import settings

GROUNDTRUTH = "groundtruth/"
HASH_CHUNK = 1024 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT: the filesystem (or the user's quota) has no room left."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int:
    """Bytes free for new files on the filesystem that holds (or will hold) ``path``."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None  # recorded when stored; None for objects stored by other means
    version: str  # changes whenever the object's bytes change (S3: the ETag)


class Storage(Protocol):
    def put_file(self, src: Path, key: str, *, link: bool = True) -> None:
        """Store a finished local file under ``key``. ``src`` is kept: the caller deletes it
        once its database rows are committed (a rolled-back request keeps its upload).
        ``link=False``: never share ``src``'s inode (local backend)."""

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        """A local path with the object's bytes (the object itself when stored locally)."""

    def local_path(self, key: str) -> Path | None:
        """The object's own file when this store is the local filesystem, else None."""

    def head(self, key: str) -> ObjectInfo:
        """Size, checksum and version; FileNotFoundError when there is no such object."""

    def download(self, key: str, out: BinaryIO) -> None: ...

    def where(self, key: str) -> str:
        """Where the object lives, for messages and cache identities."""

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (a folder: ends with '/'), sorted."""

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def put_file(self, src: Path, key: str, *, link: bool = True) -> None:
        """A hard link on the same filesystem (no copy, no space); else a copy. Either goes to
        a temporary name, renamed when complete: on failure (e.g. ENOSPC) no partial file is
        left. ``src`` is kept (see ``Storage.put_file``)."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        part.unlink(missing_ok=True)  # left by a crash mid-copy
        try:
            try:
                if not link:
                    raise OSError(errno.ENOTSUP, "a copy was asked for")
                os.link(src, part)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copyfile(src, part)
            os.replace(part, dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        # Stored before (a retried request): both names link the same file, and rename()
        # then leaves ``part`` in place.
        part.unlink(missing_ok=True)

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        return self.path(key)

    def local_path(self, key: str) -> Path:
        return self.path(key)

    def head(self, key: str) -> ObjectInfo:
        st = self.path(key).stat()
        return ObjectInfo(st.st_size, None, f"{st.st_mtime_ns}-{st.st_size}")

    def download(self, key: str, out: BinaryIO) -> None:
        with self.path(key).open("rb") as fh:
            shutil.copyfileobj(fh, out, HASH_CHUNK)

    def where(self, key: str) -> str:
        return str(self.path(key))

    def keys(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        if not folder.is_dir():
            return []
        root = self.root.resolve()
        return sorted(str(p.relative_to(root)) for p in folder.rglob("*")
                      if p.is_file() and not p.name.endswith(".part"))

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()


class StorageUnavailableError(OSError):
    """The storage (an S3 endpoint) cannot be reached or refuses the request: may pass, and is
    never the algorithm's fault."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    what: str = "image storage"  # for messages: "the image storage could not read ..."


def _images_config() -> S3Config:
    return S3Config(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url,
                    settings.s3_region, settings.s3_access_key_id,
                    settings.s3_secret_access_key)


def _data_config() -> S3Config:
    return S3Config(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url,
                    settings.s3_region, settings.s3_access_key_id,
                    settings.s3_secret_access_key, what="data storage")


def _groundtruth_config() -> S3Config:
    def pick(own: str | None, shared: str | None) -> str | None:
        return own if own is not None else shared

    return S3Config(
        bucket=pick(settings.gt_s3_bucket, settings.s3_bucket) or "",
        prefix=pick(settings.gt_s3_prefix, settings.s3_prefix) or "",
        endpoint_url=pick(settings.gt_s3_endpoint_url, settings.s3_endpoint_url),
        region=pick(settings.gt_s3_region, settings.s3_region),
        # Never the s3_* keys: those are what GPU workers hold.
        access_key_id=settings.gt_s3_access_key_id,
        secret_access_key=settings.gt_s3_secret_access_key,
        what="ground-truth storage")


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    """The image tarballs' store."""
    if settings.storage_backend == "s3":
        from backend.storage_s3 import S3Storage

        return S3Storage(_images_config())
    return LocalStorage(settings.images_dir)


@lru_cache(maxsize=8)
def _s3(config: S3Config) -> Storage:
    """One client per configuration (settings read on every call: tests change them)."""
    from backend.storage_s3 import S3Storage

    return S3Storage(config)


def data_storage() -> Storage:
    """Inputs and predictions (keys ``inputs/...``, ``predictions/...``)."""
    if settings.storage_backend == "s3":
        return _s3(_data_config())
    return LocalStorage(settings.data_dir)


def groundtruth_storage() -> Storage:
    """Ground truth (keys ``groundtruth/...``); readable only with the gt_s3_* credentials."""
    if settings.storage_backend == "s3":
        return _s3(_groundtruth_config())
    return LocalStorage(settings.data_dir)


def storage_for(key: str) -> Storage:
    """The store that holds a data key (a path the database keeps)."""
    return groundtruth_storage() if key.startswith(GROUNDTRUTH) else data_storage()


def clear_caches() -> None:
    """Settings changed (tests): the next call builds the stores again."""
    get_storage.cache_clear()
    _s3.cache_clear()


def __getattr__(name: str) -> object:
    # ``from backend.storage import S3Storage`` keeps working (boto3 is imported on use only).
    if name == "S3Storage":
        from backend.storage_s3 import S3Storage

        return S3Storage
    raise AttributeError(name)
