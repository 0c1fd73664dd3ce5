"""A real S3-protocol server for tests (moto's, over HTTP on loopback) and the settings that
point the platform's image storage at it."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from backend import storage
from backend.config import settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    """moto's S3 server on a fixed loopback port that can be stopped and started again
    (it starts empty: create the bucket again after a restart)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                          verbose=False)
        self._server.start()
        # moto's backends live in this process, not in the server: without a reset a new
        # server would show the buckets an earlier test in this process left behind.
        import urllib.request

        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as r:
            r.read()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def use_s3(monkeypatch: pytest.MonkeyPatch, server: S3Server, bucket: str = "images") -> None:
    """Settings for an S3 image storage on ``server`` (prefix ``arena/``), bucket created."""
    for key, value in {"storage_backend": "s3", "s3_endpoint_url": server.url,
                       "s3_bucket": bucket, "s3_region": "us-east-1",
                       "s3_access_key_id": "test", "s3_secret_access_key": "test",
                       "s3_prefix": "arena/", "gt_s3_access_key_id": "test",
                       "gt_s3_secret_access_key": "test"}.items():
        monkeypatch.setattr(settings, key, value)
    # no proxy for loopback; few retries so that a dead endpoint is reported quickly
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    storage.clear_caches()
    storage.S3Storage().client.create_bucket(Bucket=bucket)


def upload_data_dir(data_dir: Path) -> int:
    """Every file under ``data_dir``'s inputs/, groundtruth/ and predictions/ into the stores
    ``use_s3`` set up, then deleted locally: the bytes live in the bucket only. The count."""
    count = 0
    for top in ("inputs", "groundtruth", "predictions"):
        for path in sorted(p for p in (data_dir / top).rglob("*") if p.is_file()):
            key = str(path.relative_to(data_dir))
            storage.storage_for(key).put_file(path, key)
            path.unlink()
            count += 1
    return count
