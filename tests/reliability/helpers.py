"""Submitting arbitrary tarballs (hostile images) to the private pipeline."""

from __future__ import annotations

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
from tests.worker import harness


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
