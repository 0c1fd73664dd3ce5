"""Run background dataset imports in-process where the CLI waits between polls: the test's
transaction is never committed, so no ``datasets.import`` message reaches a broker."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import cli
from backend.datasets import jobs
from backend.models import ImportJob


def run_imports_while_cli_waits(monkeypatch: pytest.MonkeyPatch, db_session: Session) -> None:
    """Each poll's wait stores one case of every unfinished import (the worker's part)."""

    def work_instead_of_sleeping(_seconds: float) -> None:
        unfinished = db_session.scalars(select(ImportJob.id).where(
            ImportJob.status.in_(jobs.UNFINISHED))).all()
        for job_id in unfinished:
            jobs.run(job_id, budget_s=0)

    monkeypatch.setattr(cli, "time", SimpleNamespace(sleep=work_instead_of_sleeping,
                                                     monotonic=time.monotonic))


def cli_admin_with_dataset(monkeypatch: pytest.MonkeyPatch, db_session: Session) -> str:
    """An administrator logged in through the CLI, imports run where it waits, and a new
    hidden dataset: its slug."""
    from typer.testing import CliRunner

    from tests.backend import factories as f

    runner = CliRunner()
    run_imports_while_cli_waits(monkeypatch, db_session)  # the CLI's waits store the cases
    admin = f.make_user(db_session, admin=True)
    assert runner.invoke(cli.app, ["login", "--server", "http://testserver", "--username",
                                   admin.username, "--password", f.PASSWORD]).exit_code == 0
    slug = f"d{f.uid()}"
    assert runner.invoke(cli.app, ["dataset", "create", slug, "Hidden"]).exit_code == 0
    return slug
