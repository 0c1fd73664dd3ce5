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
