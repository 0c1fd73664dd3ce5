"""Dataset imports from an uploaded archive (the resumable chunked upload, purpose 'dataset')
and from an S3 prefix (moto's S3 server with IAM enforced), through the API and the import
job (run in-process, as the worker runs it). Hostile archives (members outside the folder,
links out) are refused with a message, and nothing lands outside the import folder."""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import storage
from backend.config import settings
from backend.datasets import jobs
from backend.models import Case, DatasetVersion, ImportJob
from evaluator.io import write_volume
from tests.backend import factories as f
from tests.s3_server import (
    GT_BUCKET,
    Roles,
    S3Server,
    iam_enforced,
)


def _write_case(folder: Path, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ct = rng.integers(-1000, 1500, (6, 10, 10)).astype(np.int16)
    for stem, arr in (("mr", ct // 3), ("ct", ct), ("mask", np.ones_like(ct, np.uint8))):
        write_volume(folder / f"{stem}.mha", arr)


def _dataset_tree(root: Path) -> Path:
    for i, name in enumerate(("1PA001", "1PA002")):
        _write_case(root / "Task1" / "pelvis" / name, i)
    return root


def _upload(client: TestClient, h: dict[str, str], name: str, blob: bytes) -> str:
    r = client.post("/api/images/uploads", headers=h,
                    json={"name": name, "size_bytes": len(blob), "purpose": "dataset"})
    assert r.status_code == 201, r.text
    upload_id = str(r.json()["id"])
    half = len(blob) // 2  # two chunks: the resumable path
    for start, end in ((0, half), (half, len(blob))):
        r = client.put(f"/api/images/uploads/{upload_id}", headers={
            **h, "Content-Range": f"bytes {start}-{end - 1}/{len(blob)}",
            "Content-Type": "application/octet-stream"}, content=blob[start:end])
        assert r.status_code == 200, r.text
    return upload_id


def _import(client: TestClient, h: dict[str, str], slug: str, db_session: Session,
            **body: Any) -> ImportJob:
    r = client.post(f"/api/datasets/{slug}/imports", headers=h, json=body)
    assert r.status_code == 202, r.text
    jobs.run(r.json()["id"])
    job = db_session.get(ImportJob, r.json()["id"])
    assert job is not None
    db_session.refresh(job)
    return job


def _cases(db_session: Session, job: ImportJob) -> list[Case]:
    version = db_session.get(DatasetVersion, job.dataset_version_id)
    assert version is not None
    return list(db_session.scalars(select(Case).where(Case.dataset_version_id == version.id)
                                   .order_by(Case.name)))


def _tar_gz(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root / "Task1", arcname="Task1")
    return buf.getvalue()


def test_an_uploaded_archive_is_imported_and_then_removed(
        client: TestClient, db_session: Session, tmp_path: Path) -> None:
    h, slug = f.api_dataset(client, db_session)
    upload_id = _upload(client, h, "pelvis.tar.gz", _tar_gz(_dataset_tree(tmp_path / "src")))
    job = _import(client, h, slug, db_session, source="archive", upload_id=upload_id)
    assert job.status.value == "succeeded", (job.message, job.errors)
    assert job.source == "archive:pelvis.tar.gz" and job.cases_done == 2
    cases = _cases(db_session, job)
    assert [c.name for c in cases] == ["1PA001", "1PA002"]
    assert all(c.region == "Pelvis" and c.modality.value == "mri" for c in cases)
    # The stored archive, its unpacked copy and the upload's part file are gone.
    assert storage.data_storage().keys("imports/") == []
    assert not list((settings.data_dir / "tmp" / "archives").glob("*/data"))
    assert not list(settings.uploads_dir.glob(f"{upload_id}*"))
    # The upload was used up: a second import of it is refused.
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "archive", "upload_id": upload_id})
    assert r.status_code == 409 and "upload the archive again" in r.json()["detail"]


def test_a_zip_archive_is_imported(client: TestClient, db_session: Session,
                                   tmp_path: Path) -> None:
    root = _dataset_tree(tmp_path / "src")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(root.rglob("*")):
            z.write(p, p.relative_to(root))
    h, slug = f.api_dataset(client, db_session)
    job = _import(client, h, slug, db_session, source="archive",
                  upload_id=_upload(client, h, "pelvis.zip", buf.getvalue()))
    assert job.status.value == "succeeded", (job.message, job.errors)
    assert [c.name for c in _cases(db_session, job)] == ["1PA001", "1PA002"]


def _hostile_zip(tmp_path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../escaped.mha", b"x")
    return buf.getvalue()


def _hostile_tar(tmp_path: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("Task1/pelvis/1PA001/ct.mha")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "make"), [("evil.zip", _hostile_zip),
                                            ("evil.tar", _hostile_tar)])
def test_members_outside_the_folder_fail_the_import_with_a_reason(
        client: TestClient, db_session: Session, tmp_path: Path, name: str, make: Any) -> None:
    h, slug = f.api_dataset(client, db_session)
    job = _import(client, h, slug, db_session, source="archive",
                  upload_id=_upload(client, h, name, make(tmp_path)))
    assert job.status.value == "failed"
    assert "outside the import folder" in job.message, job.message
    assert not list(settings.data_dir.parent.rglob("escaped.mha"))
    assert storage.data_storage().keys("imports/") == []  # nothing kept


def test_archive_uploads_are_for_organisers_and_archives(client: TestClient,
                                                         db_session: Session) -> None:
    participant = f.auth(db_session, f.make_user(db_session))
    r = client.post("/api/images/uploads", headers=participant,
                    json={"name": "data.tar.gz", "size_bytes": 10, "purpose": "dataset"})
    assert r.status_code == 403 and "organisers" in r.json()["detail"]
    h, slug = f.api_dataset(client, db_session)
    r = client.post("/api/images/uploads", headers=h,
                    json={"name": "data.rar", "size_bytes": 10, "purpose": "dataset"})
    assert r.status_code == 400 and ".tar.gz" in r.json()["detail"]
    r = client.post("/api/images/uploads", headers=h,
                    json={"name": "data.tar", "size_bytes": 10, "purpose": "dataset"})
    assert r.status_code == 201
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "archive", "upload_id": r.json()["id"]})
    assert r.status_code == 409 and "0 of 10 bytes" in r.json()["detail"]
    r = client.post(f"/api/datasets/{slug}/imports", headers=h, json={"source": "archive"})
    assert r.status_code == 400 and "upload_id" in r.json()["detail"]


@pytest.fixture
def on_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3Server, Roles]]:
    with iam_enforced(monkeypatch) as running:
        yield running


def test_an_s3_prefix_is_imported_within_the_allowed_prefixes(
        on_s3: tuple[S3Server, Roles], client: TestClient, db_session: Session,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("moto.server")
    import boto3

    server, roles = on_s3
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                      aws_access_key_id=roles.eval.access_key_id,
                      aws_secret_access_key=roles.eval.secret_access_key)
    root = _dataset_tree(tmp_path / "src")
    for p in sorted(root.rglob("*.mha")):
        s3.upload_file(str(p), GT_BUCKET, f"incoming/synthrad/{p.relative_to(root)}")
    h, slug = f.api_dataset(client, db_session)
    # An organiser: only from the configured prefixes.
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "s3", "path": f"s3://{GT_BUCKET}/incoming/synthrad"})
    assert r.status_code == 403 and "S3 import prefixes" in r.json()["detail"]
    monkeypatch.setattr(settings, "dataset_import_s3_prefixes", [f"s3://{GT_BUCKET}/incoming/"])
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "s3", "path": "https://example.org/data"})
    assert r.status_code == 400 and "s3://BUCKET/PREFIX/" in r.json()["detail"]
    job = _import(client, h, slug, db_session, source="s3",
                  path=f"s3://{GT_BUCKET}/incoming/synthrad")
    assert job.status.value == "succeeded", (job.message, job.errors)
    cases = _cases(db_session, job)
    assert [c.name for c in cases] == ["1PA001", "1PA002"]
    assert all(c.region == "Pelvis" for c in cases)
    # Stored like any import: the CT in the ground-truth store, the MR in the data store.
    assert storage.groundtruth_storage().exists(cases[0].ground_truth_path)
    assert storage.data_storage().exists(cases[0].input_image_path)

    empty = _import(client, h, slug, db_session, source="s3",
                    path=f"s3://{GT_BUCKET}/incoming/nothing-here/")
    assert empty.status.value == "failed" and "No cases under" in empty.message


def test_cli_uploads_an_archive_and_follows_its_import(
        cli_env: Path, db_session: Session, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from backend import cli
    from tests.backend.imports_inline import cli_admin_with_dataset

    runner = CliRunner()
    slug = cli_admin_with_dataset(monkeypatch, db_session)
    archive = tmp_path / "pelvis.tar.gz"
    archive.write_bytes(_tar_gz(_dataset_tree(tmp_path / "src")))
    result = runner.invoke(cli.app, ["dataset", "import", slug, "--archive", str(archive),
                                     "--interval", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"Dataset {slug} version 1: 2 cases."
    both = runner.invoke(cli.app, ["dataset", "import", slug, "--archive", str(archive),
                                   "--s3", "s3://b/p/"])
    assert both.exit_code == 2 and "exactly one of" in both.output
