"""A real S3-protocol server for tests (moto's, over HTTP on loopback) and the settings that
point the platform's image storage at it."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
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


# IAM policies of the two worker roles (issue 17): the GPU queue runs participant containers
# and may read/write the data bucket only; eval workers (and the API) may also read ground truth.
DATA_BUCKET, GT_BUCKET = "arena-data", "arena-gt"


def _allow(*buckets: str) -> str:
    resources = [f"arn:aws:s3:::{b}{tail}" for b in buckets for tail in ("", "/*")]
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                                       "s3:ListBucket"], "Resource": resources}]})


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class Roles:
    gpu: Keys  # the data bucket only
    eval: Keys  # the data bucket and the ground-truth bucket


def enforce_iam(server: S3Server) -> Roles:
    """Buckets and one IAM user per worker role on ``server``, then authentication and IAM
    policies enforced for every later request (moto's INITIAL_NO_AUTH_ACTION_COUNT, set over
    its API: the server runs in this process). ``relax_iam`` turns it off again."""
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=server.url, region_name="us-east-1",
                            aws_access_key_id="setup", aws_secret_access_key="setup")

    s3, iam = client("s3"), client("iam")
    for bucket in (DATA_BUCKET, GT_BUCKET):
        s3.create_bucket(Bucket=bucket)
    keys = {}
    for role, buckets in (("gpu", (DATA_BUCKET,)), ("eval", (DATA_BUCKET, GT_BUCKET))):
        iam.create_user(UserName=f"{role}-worker")
        iam.put_user_policy(UserName=f"{role}-worker", PolicyName="storage",
                            PolicyDocument=_allow(*buckets))
        made = iam.create_access_key(UserName=f"{role}-worker")["AccessKey"]
        keys[role] = Keys(made["AccessKeyId"], made["SecretAccessKey"])
    _moto_api(server, "reset-auth", b"0")
    return Roles(gpu=keys["gpu"], eval=keys["eval"])


def relax_iam(server: S3Server) -> None:
    _moto_api(server, "reset-auth", b"inf")


def _moto_api(server: S3Server, path: str, body: bytes) -> None:
    import urllib.request

    # Not form-encoded: moto reads the raw body.
    request = urllib.request.Request(f"{server.url}/moto-api/{path}", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as r:
        r.read()


def role_settings(server: S3Server, data: Keys, groundtruth: Keys | None) -> dict[str, Any]:
    """Settings of a host that holds ``data`` keys and (eval, API) ``groundtruth`` keys."""
    return {"storage_backend": "s3", "s3_endpoint_url": server.url, "s3_bucket": DATA_BUCKET,
            "s3_region": "us-east-1", "s3_prefix": "arena/",
            "s3_access_key_id": data.access_key_id,
            "s3_secret_access_key": data.secret_access_key,
            "gt_s3_bucket": GT_BUCKET, "gt_s3_prefix": "arena/",
            "gt_s3_access_key_id": groundtruth.access_key_id if groundtruth else None,
            "gt_s3_secret_access_key": groundtruth.secret_access_key if groundtruth else None}


def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 finds no credentials of its own (environment, files, instance metadata): a host
    without gt_s3_* keys has none for ground truth."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@contextlib.contextmanager
def iam_enforced(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3Server, Roles]]:
    """A started server with IAM enforced and this process configured as a host holding the
    eval role's keys (data and ground truth); stopped and reset afterwards."""
    server = S3Server()
    server.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    no_ambient_credentials(monkeypatch)
    try:
        roles = enforce_iam(server)
        for name, value in role_settings(server, roles.eval, roles.eval).items():
            monkeypatch.setattr(settings, name, value)
        storage.clear_caches()
        yield server, roles
    finally:
        relax_iam(server)
        server.stop()
        storage.clear_caches()
