"""The S3(-compatible) backend of ``backend.storage``.

Failures of the endpoint (unreachable, 5xx, refused credentials) raise
``StorageUnavailableError``; a key that is not there raises ``FileNotFoundError``. Every object
is stored with its sha256 in the metadata (``x-amz-meta-sha256``): readers check what they
fetched against it.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, BinaryIO

from backend.storage import (
    ObjectInfo,
    S3Config,
    StorageUnavailableError,
    _images_config,
    sha256_of,
)

SHA_META = "sha256"


class S3Storage:
    def __init__(self, config: S3Config | None = None) -> None:
        import boto3

        self.config = config or _images_config()
        self.bucket = self.config.bucket
        self.prefix = self.config.prefix
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=self.config.endpoint_url,
            region_name=self.config.region,
            aws_access_key_id=self.config.access_key_id,
            aws_secret_access_key=self.config.secret_access_key,
        )

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    _where = where

    def _failed(self, action: str, key: str, exc: Exception) -> OSError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return FileNotFoundError(errno.ENOENT, f"{self.where(key)} does not exist")
        detail = " ".join(str(exc).split())[:300]
        return StorageUnavailableError(
            f"the {self.config.what} could not {action} {self.where(key)}: {detail}")

    def put_file(self, src: Path, key: str, *, link: bool = True) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # upload_file streams in multipart chunks: memory stays flat for multi-GB files.
            self.client.upload_file(str(src), self.bucket, self.prefix + key,
                                    ExtraArgs={"Metadata": {SHA_META: sha256_of(src)}})
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise self._failed("store", key, exc) from exc

    def local_copy(self, key: str, cache_dir: Path) -> Path:
        """A copy under ``cache_dir/key`` (unchecked; the workers use ``object_cache``)."""
        dest = cache_dir / key
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_suffix(dest.suffix + ".part")
            try:
                with part.open("wb") as out:
                    self.download(key, out)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            part.replace(dest)
        return dest

    def local_path(self, key: str) -> None:
        return None

    def head(self, key: str, action: str = "read") -> ObjectInfo:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            meta = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as exc:
            raise self._failed(action, key, exc) from exc
        sha = (meta.get("Metadata") or {}).get(SHA_META)
        return ObjectInfo(int(meta["ContentLength"]), str(sha) if sha else None,
                          str(meta.get("ETag", "")))

    def download(self, key: str, out: BinaryIO) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_fileobj(self.bucket, self.prefix + key, out)
        except (Boto3Error, BotoCoreError, ClientError) as exc:
            raise self._failed("read", key, exc) from exc

    def keys(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                found += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("list", prefix, exc) from exc
        return sorted(found)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("delete", key, exc) from exc

    def delete_prefix(self, prefix: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        keys = self.keys(prefix)
        try:
            for start in range(0, len(keys), 1000):  # the most one request may delete
                batch = [{"Key": self.prefix + k} for k in keys[start:start + 1000]]
                self.client.delete_objects(Bucket=self.bucket,
                                           Delete={"Objects": batch, "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise self._failed("delete", prefix, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self.head(key, "check")
        except FileNotFoundError:
            return False
        return True
