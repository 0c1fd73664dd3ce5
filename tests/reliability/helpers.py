"""Submitting arbitrary tarballs (hostile images) to the private pipeline."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend import tasks_client
from backend.config import settings
from backend.db import session_scope
from backend.models import (
    AlgorithmImage,
    CaseRun,
    ImageStatus,
    Phase,
    Submission,
    SubmissionStatus,
)
from tests.worker import harness


def register_tarball(s: Session, username: str, name: str, tarball: Path) -> AlgorithmImage:
    owner = harness.user(s, username)
    key = f"{owner.id}/{name}.tar.gz"
    dest = settings.images_dir / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        try:
            os.link(tarball, dest)
        except OSError:
            shutil.copyfile(tarball, dest)
    digest = hashlib.sha256(f"{name}-{owner.id}".encode()).hexdigest()
    image = AlgorithmImage(owner_id=owner.id, name=name, sha256=digest,
                           size_bytes=tarball.stat().st_size, status=ImageStatus.VALID,
                           storage_key=key, docker_image_id=None, compression="gzip")
    s.add(image)
    s.flush()
    return image


def submit_tarball(s: Session, phase: Phase, username: str, name: str, tarball: Path) -> int:
    image = register_tarball(s, username, name, tarball)
    sub = Submission(phase_id=phase.id, user_id=image.owner_id, image_id=image.id,
                     status=SubmissionStatus.PENDING)
    s.add(sub)
    s.flush()
    tasks_client.start_submission_after_commit(s, sub.id)
    return sub.id


def runs(sub_id: int) -> list[CaseRun]:
    with session_scope() as s:
        return list(s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)
                              .order_by(CaseRun.id)))
