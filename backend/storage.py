"""Where validated image tarballs live: the local filesystem (default) or S3-compatible.

The worker gets a local file with ``get_storage().local_copy(key, cache_dir)``.
"""

from __future__ import annotations

import errno
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from backend.config import settings


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC or EDQUOT: the filesystem (or the user's quota) has no room left."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int:
    """Bytes free for new files on the filesystem that holds (or will hold) ``path``."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class Storage(Protocol):
    def put_file(self, src: Path, key: str) -> None:
        """Store a finished local file under ``key``. ``src`` is kept: the caller deletes it
        once its database rows are committed (a rolled-back request keeps its upload)."""

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        """A local path with the object's bytes (the object itself when stored locally)."""

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    def put_file(self, src: Path, key: str) -> None:
        """A hard link on the same filesystem (no copy, no space); else a copy. Either goes to
        a temporary name, renamed when complete: on failure (e.g. ENOSPC) no partial file is
        left. ``src`` is kept (see ``Storage.put_file``)."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.part")
        part.unlink(missing_ok=True)  # left by a crash mid-copy
        try:
            try:
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

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()


class S3Storage:
    def __init__(self) -> None:
        import boto3

        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
        )

    def put_file(self, src: Path, key: str) -> None:
        # upload_file streams in multipart chunks: memory stays flat for multi-GB files.
        self.client.upload_file(str(src), self.bucket, self.prefix + key)

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        dest = cache_dir / key
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_suffix(dest.suffix + ".part")
            self.client.download_file(self.bucket, self.prefix + key, str(part))
            part.replace(dest)
        return dest

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except Exception:
            return False
        return True


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage()
    return LocalStorage(settings.images_dir)
