"""A dataset import with the S3 backend, against moto's S3 server with IAM policies enforced:
inputs go to the data bucket, ground truth to its own bucket (with the keys only the API and
eval workers hold), nothing stays in the API host's data directory, a failed import removes
what it stored, and a case's ground-truth folder comes back whole on another host."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend import object_cache, storage
from backend.config import settings
from backend.datasets import jobs
from backend.models import ImportJob
from backend.storage import data_storage, groundtruth_storage
from tests.backend import factories as f
from tests.s3_server import (
    Roles,
    S3Server,
    iam_enforced,
)

pytest.importorskip("moto.server")


@pytest.fixture
def api_on_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3Server, Roles]]:
    with iam_enforced(monkeypatch) as running:
        yield running


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_import_stores_inputs_and_ground_truth_apart(
    api_on_s3: tuple[S3Server, Roles], client: TestClient, db_session: Session,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    h, slug = f.api_dataset(client, db_session)
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "phantom", "anatomy": "brain", "cases": 2, "size": "small"})
    assert r.status_code == 202, r.text
    jobs.run(r.json()["id"])
    job = db_session.get(ImportJob, r.json()["id"])
    assert job is not None
    db_session.refresh(job)
    assert job.status.value == "succeeded", (job.message, job.errors)
    inputs = data_storage().keys("inputs/")
    truth = groundtruth_storage().keys("groundtruth/")
    assert len(inputs) == 6 and all(k.startswith(f"inputs/{job.target_dir}/") for k in inputs)
    assert any(k.endswith("/ct.mha") or k.endswith("/ct.nii.gz") for k in truth), truth
    assert data_storage().keys("groundtruth/") == []  # not in the data bucket
    assert job.bytes_done == sum(storage.storage_for(k).head(k).size for k in inputs + truth)
    for root in (settings.inputs_dir, settings.groundtruth_dir, settings.data_dir / "tmp"):
        assert _files(root) == []  # nothing kept on the API host

    # An eval host reads a case's ground-truth folder back whole (what dose scoring reads).
    record = next(iter(job.imported.values()))
    prefix = str(Path(record["ground_truth_path"]).parent) + "/"
    monkeypatch.setattr(settings, "data_dir", tmp_path / "eval-host")
    with object_cache.local_folder(prefix, tmp_path / "case" / Path(prefix).name) as folder:
        local = sorted(str(p.relative_to(folder)) for p in _files(folder))
        assert local == sorted(k[len(prefix):] for k in truth if k.startswith(prefix))
        ct = folder / Path(record["ground_truth_path"]).name
        stored = groundtruth_storage().head(record["ground_truth_path"]).sha256
        assert hashlib.sha256(ct.read_bytes()).hexdigest() == stored


def test_a_failed_import_removes_what_it_stored(
    api_on_s3: tuple[S3Server, Roles], client: TestClient, db_session: Session,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    h, slug = f.api_dataset(client, db_session)
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "phantom", "anatomy": "brain", "cases": 2})
    real = jobs.store_case

    def second_fails(target: str, planned: jobs.Planned) -> tuple[dict[str, object], int]:
        if planned.name.endswith("2"):
            raise ValueError("unreadable image")
        return real(target, planned)

    monkeypatch.setattr(jobs, "store_case", second_fails)
    jobs.run(r.json()["id"])
    job = db_session.get(ImportJob, r.json()["id"])
    assert job is not None
    db_session.refresh(job)
    assert job.status.value == "failed" and job.errors[0]["case"].endswith("2")
    assert data_storage().keys("inputs/") == [] and groundtruth_storage().keys("groundtruth/") == []
