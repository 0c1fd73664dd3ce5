"""A worker that runs in a container tells the Docker engine where its work directory is on
the engine's host (SYNTHARENA_HOST_WORK_DIR): the bind mounts of /input and /output name that
path, not the worker's own view of it. Here the 'host path' is another name (a symlink) of
the work directory, so the engine can mount it; a host path that does not exist proves the
engine was given the setting's path: it refuses the mount (and creates nothing there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from backend.config import settings
from backend.db import session_scope
from backend.models import CaseRun, CaseRunStatus
from tests.worker import harness
from worker import sandbox, steps


def test_host_path_maps_the_work_directory(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setattr(settings, "data_dir", tmp_path / "data")
    run_dir = settings.work_dir / "sub1-x" / "input"
    run_dir.mkdir(parents=True)
    assert steps.host_path(run_dir) == str(run_dir.resolve())  # unset: the same path
    monkeypatch.setattr(settings, "host_work_dir", Path("/srv/arena/work"))
    assert steps.host_path(run_dir) == "/srv/arena/work/sub1-x/input"
    with pytest.raises(sandbox.SandboxError, match="SYNTHARENA_HOST_WORK_DIR"):
        steps.host_path(tmp_path)  # outside the work directory: the engine cannot see it


def _run_one(env: harness.PipelineEnv, slug: str, user: str) -> CaseRun:
    with session_scope() as s:
        phase = harness.seed_phase(s, env.data_dir, slug=slug, n_cases=1)
        sub_id = harness.submit(s, phase, user, "static-c").id
    steps.start_submission(sub_id)
    with session_scope() as s:
        run = s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)).one()
    steps.run_cases(sub_id, [run.id], worker_name="pytest", gpu=None)
    with session_scope() as s:
        done = s.get(CaseRun, run.id)
        assert done is not None
        return done


def test_bind_mounts_use_the_host_work_dir(clean_pipeline: harness.PipelineEnv,
                                            monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    alias = tmp_path / "host-view-of-work"
    alias.symlink_to(settings.work_dir, target_is_directory=True)
    monkeypatch.setattr(settings, "host_work_dir", alias)
    run = _run_one(clean_pipeline, "p-host-alias", "alice")
    assert run.status is CaseRunStatus.SUCCEEDED, run.error_message

    monkeypatch.setattr(settings, "host_work_dir", tmp_path / "not-on-the-host")
    run = _run_one(clean_pipeline, "p-host-missing", "bob")
    assert run.status is CaseRunStatus.FAILED
    assert "not-on-the-host" in (run.error_message or ""), run.error_message
    assert "does not exist" in (run.error_message or ""), run.error_message
    assert not (tmp_path / "not-on-the-host").exists()  # the engine created nothing there
