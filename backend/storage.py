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


class StorageUnavailableError(OSError):
    """The image storage (an S3 endpoint) cannot be reached or refuses the request: may pass,
    and is never the algorithm's fault."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


class S3Storage:
    """Tarballs in an S3(-compatible) bucket.  Failures of the endpoint (unreachable, 5xx,
    refused credentials) raise :class:`StorageUnavailableError`; a key that is not there
    raises ``FileNotFoundError``."""

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

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _failed(self, action: str, key: str, exc: Exception) -> OSError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return FileNotFoundError(errno.ENOENT, f"{self._where(key)} does not exist")
        detail = " ".join(str(exc).split())[:300]
        return StorageUnavailableError(
            f"the image storage could not {action} {self._where(key)}: {detail}")

    def put_file(self, src: Path, key: str) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # upload_file streams in multipart chunks: memory stays flat for multi-GB files.
            self.client.upload_file(str(src), self.bucket, self.prefix + key)
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise self._failed("store", key, exc) from exc

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        dest = cache_dir / key
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_suffix(dest.suffix + ".part")
            try:
                self.client.download_file(self.bucket, self.prefix + key, str(part))
            except (Boto3Error, BotoCoreError, ClientError) as exc:
                part.unlink(missing_ok=True)
                raise self._failed("read", key, exc) from exc
            part.replace(dest)
        return dest

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("delete", key, exc) from exc

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as exc:
            error = self._failed("check", key, exc)
            if isinstance(error, FileNotFoundError):
                return False
            raise error from exc
        return True


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage()
    return LocalStorage(settings.images_dir)
