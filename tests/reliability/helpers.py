"""Submitting arbitrary tarballs (hostile images) to the private pipeline."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db import session_scope
from backend.models import (
    AlgorithmImage,
    CaseRun,
    Phase,
    Submission,
    SubmissionStatus,
)
from backend.submissions import pipeline
from tests.reliability import figures
from tests.worker import harness
from worker import sandbox


def register_tarball(s: Session, username: str, name: str, tarball: Path) -> AlgorithmImage:
    return harness.register_tarball(s, harness.user(s, username), name, tarball)


def submit_tarball(s: Session, phase: Phase, username: str, name: str, tarball: Path) -> int:
    image = register_tarball(s, username, name, tarball)
    sub = Submission(phase_id=phase.id, user_id=image.owner_id, image_id=image.id,
                     status=SubmissionStatus.PENDING)
    s.add(sub)
    s.flush()
    pipeline.enqueue_start(s, sub.id)
    return sub.id


def runs(sub_id: int) -> list[CaseRun]:
    with session_scope() as s:
        return list(s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)
                              .order_by(CaseRun.id)))


def judge_container(name: str, why: list[str], *, logs: str, evidence: str, outcome: str,
                    problems: list[str]) -> None:
    """The checks every hostile container shares (its ``evidence`` line in the logs, no BREACH
    line), on top of the test's own ``why``; records the attack in the figures and adds a line
    to ``problems`` when it was not contained."""
    if evidence and evidence not in logs:
        why.append(f"no evidence {evidence!r} in the logs")
    breaches = [x for x in logs.splitlines() if "BREACH" in x]
    if breaches:
        why.append("breach: " + "; ".join(breaches))
    figures.record("attacks", name, kind="container", contained=not why, outcome=outcome[:300],
                   evidence=next((x for x in logs.splitlines() if evidence and evidence in x),
                                 "")[:160], problems=why)
    if why:
        problems.append(f"{name}: {'; '.join(why)}")


@contextmanager
def hostile_worker(env: harness.PipelineEnv, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker for hostile submissions; afterwards only its own containers are removed
    (other tests may share the engine)."""
    proc = harness.start_worker(env, name, concurrency=2)
    try:
        yield proc
    finally:
        harness.stop_worker(proc)
        sandbox.remove_containers(**{sandbox.LABEL_WORKER: f"{name}@{os.uname().nodename}"})
