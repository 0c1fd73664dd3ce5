"""Ground truth is readable only with the eval workers' credentials (issue 17), proven against
a real S3-protocol server that enforces authentication and IAM policies (moto's, with
INITIAL_NO_AUTH_ACTION_COUNT 0): a GPU-queue worker's keys are refused on ground truth, while
they do read inputs and write predictions; the eval worker's keys read ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend import object_cache, storage
from backend.config import settings
from backend.storage import (
    S3Config,
    StorageUnavailableError,
    data_storage,
    groundtruth_storage,
)
from backend.storage_s3 import S3Storage
from tests.s3_server import (
    GT_BUCKET,
    Roles,
    S3Server,
    enforce_iam,
    no_ambient_credentials,
    relax_iam,
    role_settings,
)

pytest.importorskip("moto.server")

GT_KEY = "groundtruth/ds/v1/1PA001/ct.mha"
INPUT_KEY = "inputs/ds/v1/1PA001/mri.mha"


@pytest.fixture
def iam(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[S3Server, Roles]]:
    server = S3Server()
    server.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    no_ambient_credentials(monkeypatch)
    monkeypatch.setattr(settings, "data_dir", tmp_path / "host")
    try:
        yield server, enforce_iam(server)
    finally:
        relax_iam(server)
        server.stop()
        storage.clear_caches()


def _as(monkeypatch: pytest.MonkeyPatch, values: dict[str, object]) -> None:
    for key, value in values.items():
        monkeypatch.setattr(settings, key, value)
    storage.clear_caches()


def test_gpu_worker_credentials_are_refused_on_ground_truth(
    iam: tuple[S3Server, Roles], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, roles = iam
    src = tmp_path / "ct.mha"
    src.write_bytes(b"ground truth voxels" * 1000)

    # The API (an import) holds the eval role's keys: it stores inputs and ground truth.
    _as(monkeypatch, role_settings(server, roles.eval, roles.eval))
    groundtruth_storage().put_file(src, GT_KEY)
    data_storage().put_file(src, INPUT_KEY)

    # A GPU-queue worker: data keys only, no gt_s3_* keys (and none in its environment).
    _as(monkeypatch, role_settings(server, roles.gpu, None))
    with pytest.raises(StorageUnavailableError, match="ground-truth storage could not read"), \
            object_cache.local_file(GT_KEY):
        pass
    # Its own keys, tried on ground truth, are refused by the storage itself.
    stolen = S3Storage(S3Config(
        bucket=GT_BUCKET, prefix="arena/", endpoint_url=server.url, region="us-east-1",
        access_key_id=roles.gpu.access_key_id,
        secret_access_key=roles.gpu.secret_access_key, what="ground-truth storage"))
    for attempt in (lambda: stolen.head(GT_KEY), lambda: stolen.keys("groundtruth/"),
                    lambda: stolen.download(GT_KEY, (tmp_path / "x").open("wb"))):
        with pytest.raises(StorageUnavailableError, match=r"AccessDenied|403"):
            attempt()
    # ... while the same keys read inputs and store predictions (the policy works).
    with object_cache.local_file(INPUT_KEY) as path:
        assert path.read_bytes() == src.read_bytes()
    data_storage().put_file(src, "predictions/1/1PA001.mha")
    assert object_cache.cache().stats()["misses"] == 1
    assert not any(settings.data_dir.rglob("ct.mha"))  # nothing of ground truth on this host

    # An eval worker (its own data dir) reads ground truth with its keys.
    monkeypatch.setattr(settings, "data_dir", tmp_path / "eval-host")
    _as(monkeypatch, role_settings(server, roles.eval, roles.eval))
    with object_cache.local_file(GT_KEY) as path:
        assert path.read_bytes() == src.read_bytes()
        assert path.is_relative_to(tmp_path / "eval-host")
