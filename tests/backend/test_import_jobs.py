"""Dataset imports as background jobs: lifecycle, progress, resume after a killed worker, the
reaper's rule, per-case errors, and the CLI's progress output.

The test's transaction is never committed, so no message reaches a broker: the tests run the
``datasets.import`` task's function (``jobs.run``) in-process where a worker would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import SimpleITK as sitk  # noqa: N813
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from backend import cli
from backend.config import settings
from backend.datasets import importers, jobs
from backend.models import Case, ImportJob, ImportStatus
from tests.backend import factories as f
from tests.backend.imports_inline import cli_admin_with_dataset


def _start(client: TestClient, h: dict[str, str], slug: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "phantom", "anatomy": "brain", **body})
    assert r.status_code == 202, r.text
    return dict(r.json())


def _get(client: TestClient, h: dict[str, str], slug: str, job_id: int) -> dict[str, Any]:
    r = client.get(f"/api/datasets/{slug}/imports/{job_id}", headers=h)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _on_disk(job_id: int, db_session: Session) -> int:
    job = db_session.get(ImportJob, job_id)
    assert job is not None
    return sum(p.stat().st_size for root in (settings.inputs_dir, settings.groundtruth_dir)
               for p in (root / job.target_dir).rglob("*") if p.is_file())


def test_lifecycle_and_progress(client: TestClient, db_session: Session) -> None:
    h, slug = f.api_dataset(client, db_session)
    job = _start(client, h, slug, cases=3)
    assert job["status"] == "queued" and job["cases_total"] is None and job["version"] is None
    jobs.run(job["id"], budget_s=0)  # one case per task run: the rest is sent on
    mid = _get(client, h, slug, job["id"])
    assert (mid["status"], mid["cases_done"], mid["cases_total"]) == ("running", 1, 3)
    assert mid["bytes_done"] > 0 and mid["version"] is None
    # Nothing is published while the import runs: a phase cannot pick half a dataset.
    assert client.get(f"/api/datasets/{slug}", headers=h).json()["versions"] == []
    jobs.run(job["id"], budget_s=0)
    jobs.run(job["id"], budget_s=0)
    done = _get(client, h, slug, job["id"])
    assert (done["status"], done["cases_done"], done["version"]) == ("succeeded", 3, 1)
    assert done["bytes_done"] == _on_disk(job["id"], db_session)
    assert done["finished_at"] is not None and done["errors"] == []
    cases = client.get(f"/api/datasets/{slug}/versions/1/cases", headers=h).json()
    assert [c["name"] for c in cases] == ["1BA001", "1BA002", "1BA003"]
    assert all((settings.data_dir / c["ground_truth_path"]).is_file() for c in cases)
    jobs.run(job["id"])  # a duplicate message after the end: nothing happens
    assert _get(client, h, slug, job["id"]) == done


class WorkerKilled(BaseException):
    """Stands for SIGKILL of the worker mid-case: nothing after it runs, no handler sees it."""


def test_resume_after_a_worker_is_killed_mid_case(
    client: TestClient, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, slug = f.api_dataset(client, db_session)
    job = _start(client, h, slug, cases=4)
    real_copy, copied = importers.copy_ground_truth, []

    def dies_on_third_case(src: Path, dest_dir: Path, stem: str) -> Path:
        copied.append(dest_dir.name)
        if dest_dir.name == "1BA003":  # its inputs are written, its ground truth not yet
            raise WorkerKilled
        return real_copy(src, dest_dir, stem)

    monkeypatch.setattr(importers, "copy_ground_truth", dies_on_third_case)
    with pytest.raises(WorkerKilled):
        jobs.run(job["id"])
    monkeypatch.setattr(importers, "copy_ground_truth", real_copy)
    left = _get(client, h, slug, job["id"])
    assert (left["status"], left["cases_done"]) == ("running", 2)
    target = db_session.get(ImportJob, job["id"])
    assert target is not None
    # Its files are staged and stored only once whole: nothing of it reached the storage.
    assert not (settings.inputs_dir / target.target_dir / "1BA003").exists()
    assert (settings.inputs_dir / target.target_dir / "1BA002" / "mri.mha").is_file()
    jobs.run(job["id"])  # the original message redelivered: the dead run still owns the job
    assert _get(client, h, slug, job["id"])["cases_done"] == 2

    # A worker answers but none runs the import: the reaper sends it again.
    assert jobs.reap(frozenset(), grace_s=0, hard_s=3600) == [job["id"]]
    db_session.expire_all()
    assert db_session.get(ImportJob, job["id"]).attempts == 1  # type: ignore[union-attr]
    jobs.run(job["id"])
    done = _get(client, h, slug, job["id"])
    assert (done["status"], done["cases_done"], done["cases_total"]) == ("succeeded", 4, 4)
    # The bytes count each case once (the killed case's first half is not counted twice).
    assert done["bytes_done"] == _on_disk(job["id"], db_session)
    db_session.refresh(target)
    count = db_session.scalar(select(func.count(Case.id)).where(
        Case.dataset_version_id == target.dataset_version_id))
    assert count == 4
    names = [c["name"] for c in
             client.get(f"/api/datasets/{slug}/versions/1/cases", headers=h).json()]
    assert names == ["1BA001", "1BA002", "1BA003", "1BA004"]
    assert (settings.groundtruth_dir / target.target_dir / "1BA003" / "ct.mha").is_file()


def test_reaper_leaves_live_imports_and_fails_after_repeated_losses(
    client: TestClient, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, slug = f.api_dataset(client, db_session)
    job_id = _start(client, h, slug, cases=1)["id"]
    # Queued, no message seen to run: only the hard limit re-sends it (its message may just
    # be waiting behind other work).
    assert jobs.reap(frozenset(), grace_s=0, hard_s=3600) == []
    job = db_session.get(ImportJob, job_id)
    assert job is not None
    job.status, job.runner = ImportStatus.RUNNING, "some-run"
    db_session.flush()
    assert jobs.reap(frozenset({job_id}), grace_s=0, hard_s=3600) == []  # its task is live
    assert jobs.reap(None, grace_s=0, hard_s=3600) == []  # nobody answered: not yet stale
    monkeypatch.setattr(settings, "case_run_max_attempts", 1)
    assert jobs.reap(frozenset(), grace_s=0, hard_s=3600) == [job_id]
    db_session.refresh(job)
    job.runner = "another-run"
    db_session.flush()
    assert jobs.reap(frozenset(), grace_s=0, hard_s=3600) == []
    failed = _get(client, h, slug, job_id)
    assert failed["status"] == "failed" and "lost 1 times" in failed["message"]


def _volume(path: Path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.Image(4, 4, 3, sitk.sitkFloat32)
    image += value
    sitk.WriteImage(image, str(path))


def test_a_broken_case_is_reported_and_nothing_is_published(
    client: TestClient, db_session: Session, tmp_path: Path
) -> None:
    admin = f.make_user(db_session, admin=True)
    h = f.auth(db_session, admin)
    slug = f"ds-{f.uid()}"
    assert client.post("/api/datasets", headers=h,
                       json={"slug": slug, "title": "X"}).status_code == 201
    root = tmp_path / "Task1"
    for case in ("1BA001", "1BA002"):
        for name, v in (("mr", 1.0), ("ct", 2.0), ("mask", 1.0)):
            _volume(root / "brain" / case / f"{name}.nii.gz", v)
    (root / "brain" / "1BA002" / "mr.nii.gz").write_bytes(b"not an image")
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "synthrad", "path": str(root)})
    assert r.status_code == 202, r.text
    jobs.run(r.json()["id"])
    job = _get(client, h, slug, r.json()["id"])
    assert job["status"] == "failed" and job["cases_done"] == 1
    assert [e["case"] for e in job["errors"]] == ["1BA002"]
    assert "nothing was published" in job["message"]
    assert client.get(f"/api/datasets/{slug}", headers=h).json()["versions"] == []
    assert _on_disk(job["id"], db_session) == 0  # the stored good case is removed too


def test_the_request_only_checks_and_queues(
    client: TestClient, db_session: Session, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, slug = f.api_dataset(client, db_session)
    t0 = time.monotonic()
    job = _start(client, h, slug, anatomy="pelvis", size="realistic", cases=60, plans=True)
    assert time.monotonic() - t0 < 2.0  # minutes of work if it ran in the request
    assert job["status"] == "queued"
    assert not settings.inputs_dir.exists() or not any(settings.inputs_dir.rglob("*.mha"))
    assert client.get("/api/health").status_code == 200
    # The path checks still answer in the request (organisers: only the import folders).
    monkeypatch.setattr(settings, "dataset_import_roots", [tmp_path / "allowed"])
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "synthrad", "path": str(tmp_path / "elsewhere")})
    assert r.status_code == 403 and "import folders" in r.json()["detail"]
    (tmp_path / "allowed").mkdir()
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "synthrad", "path": str(tmp_path / "allowed" / "none")})
    assert r.status_code == 400 and "is not a folder" in r.json()["detail"]
    other_h, other_slug = f.api_dataset(client, db_session)
    assert client.get(f"/api/datasets/{other_slug}/imports/{job['id']}",
                      headers=other_h).status_code == 404


runner = CliRunner()


def test_cli_shows_progress_until_done_and_no_wait_returns(
    cli_env: Path, db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    slug = cli_admin_with_dataset(monkeypatch, db_session)
    result = runner.invoke(cli.app, ["dataset", "import", slug, "--phantom", "brain",
                                     "--cases", "3", "--interval", "0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].startswith("queued: case 0/?")
    assert [line.split(",")[0] for line in lines if line.startswith("running")] == [
        "running: case 1/3", "running: case 2/3"]
    assert any(line.startswith("succeeded: case 3/3") for line in lines)
    assert lines[-1] == f"Dataset {slug} version 1: 3 cases."

    result = runner.invoke(cli.app, ["dataset", "import", slug, "--phantom", "brain",
                                     "--cases", "1", "--no-wait"])
    assert result.exit_code == 0 and "import-status" in result.output
    job_id = int(result.output.split()[1])
    assert db_session.get(ImportJob, job_id).status is ImportStatus.QUEUED  # type: ignore[union-attr]
    status = runner.invoke(cli.app, ["dataset", "import-status", slug, str(job_id)])
    assert status.exit_code == 0 and status.output.startswith("queued: case 0/?")


def test_an_unreadable_path_is_a_clear_400(client: TestClient, db_session: Session) -> None:
    h = f.auth(db_session, f.make_user(db_session, admin=True))
    slug = f"ds-{f.uid()}"
    assert client.post("/api/datasets", headers=h,
                       json={"slug": slug, "title": "X"}).status_code == 201
    r = client.post(f"/api/datasets/{slug}/imports", headers=h,
                    json={"source": "synthrad", "path": "/tmp/" + "x" * 300})
    assert r.status_code == 400 and "cannot be read" in r.json()["detail"]
