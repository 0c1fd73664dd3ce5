"""Typed factories. Each creates rows in the test's session (flushed, not committed)."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from functools import lru_cache
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.auth.service import create_token
from backend.leaderboards import service as leaderboards
from backend.models import (
    AggregateResult,
    AlgorithmImage,
    Case,
    Challenge,
    ChallengeMember,
    ChallengeRole,
    Dataset,
    DatasetVersion,
    ImageStatus,
    Modality,
    Phase,
    PhaseKind,
    Submission,
    SubmissionStatus,
    User,
    utcnow,
)
from backend.security import hash_password

PASSWORD = "correct horse battery"
_seq = itertools.count(1)


@lru_cache(maxsize=1)
def _password_hash() -> str:
    return hash_password(PASSWORD)  # argon2 is slow on purpose: hash once per run


def uid() -> str:
    return f"{next(_seq)}{uuid.uuid4().hex[:6]}"


def make_user(session: Session, *, admin: bool = False, name: str | None = None) -> User:
    name = name or f"user{uid()}"
    user = User(email=f"{name}@example.org", username=name, password_hash=_password_hash(),
                is_admin=admin)
    session.add(user)
    session.flush()
    return user


def auth(session: Session, user: User) -> dict[str, str]:
    _, secret = create_token(session, user, "test", None)
    session.flush()
    return {"Authorization": f"Bearer {secret}"}


def api_dataset(client: TestClient, session: Session) -> tuple[dict[str, str], str]:
    """A dataset created through the API by its challenge's organiser: their headers, its slug."""
    org = make_user(session)
    challenge = make_challenge(session, org)
    headers = auth(session, org)
    r = client.post("/api/datasets", headers=headers, json={
        "slug": f"ds-{uid()}", "title": "Hidden test", "challenge": challenge.slug})
    assert r.status_code == 201, r.text
    return headers, r.json()["slug"]


def make_challenge(session: Session, organizer: User | None = None, *,
                   public: bool = True) -> Challenge:
    challenge = Challenge(slug=f"ch-{uid()}", title="Test challenge", description="",
                          is_public=public)
    session.add(challenge)
    session.flush()
    if organizer is not None:
        add_member(session, challenge, organizer, ChallengeRole.ORGANIZER)
    return challenge


def add_member(session: Session, challenge: Challenge, user: User,
               role: ChallengeRole = ChallengeRole.PARTICIPANT) -> ChallengeMember:
    member = ChallengeMember(challenge_id=challenge.id, user_id=user.id, role=role)
    session.add(member)
    session.flush()
    return member


def make_dataset_version(session: Session, challenge: Challenge | None = None,
                         cases: int = 3) -> DatasetVersion:
    dataset = Dataset(slug=f"ds-{uid()}", title="Test data",
                      challenge_id=challenge.id if challenge else None)
    session.add(dataset)
    session.flush()
    version = DatasetVersion(dataset_id=dataset.id, version=1, source="test", case_count=cases)
    session.add(version)
    session.flush()
    for i in range(cases):
        name = f"1BA{i:03d}"
        session.add(Case(
            dataset_version_id=version.id, name=name, modality=Modality.MRI, region="Brain",
            input_image_path=f"inputs/{dataset.slug}/v1/{name}/mri.mha",
            mask_path=f"inputs/{dataset.slug}/v1/{name}/mask.mha",
            ground_truth_path=f"groundtruth/{dataset.slug}/v1/{name}/ct.mha",
            labels_path=None, plan_path=None,
        ))
    session.flush()
    return version


def make_phase(session: Session, challenge: Challenge, version: DatasetVersion | None = None,
               **overrides: Any) -> Phase:
    values: dict[str, Any] = {
        "slug": f"ph-{uid()}",
        "title": "Validation",
        "kind": PhaseKind.VALIDATION,
        "dataset_version_id": version.id if version else None,
        "is_open": True,
        "opens_at": utcnow() - timedelta(days=1),
        "closes_at": utcnow() + timedelta(days=1),
        "submissions_per_period": 3,
        "submission_period_s": 24 * 3600,
        "primary_metric": "mae",
        "primary_higher_is_better": False,
        "extra_columns": [{"metric": "psnr", "higher_is_better": True}],
    }
    values.update(overrides)
    phase = Phase(challenge_id=challenge.id, **values)
    session.add(phase)
    session.flush()
    return phase


def make_image(session: Session, owner: User, *,
               status: ImageStatus = ImageStatus.VALID) -> AlgorithmImage:
    sha = uuid.uuid4().hex * 2
    image = AlgorithmImage(owner_id=owner.id, name="algo:1", sha256=sha, size_bytes=1000,
                           status=status, storage_key=f"{owner.id}/{sha}.tar",
                           docker_image_id="sha256:" + sha, validation_message="")
    session.add(image)
    session.flush()
    return image


def make_submission(
    session: Session, phase: Phase, user: User, image: AlgorithmImage | None = None, *,
    status: SubmissionStatus = SubmissionStatus.SUCCEEDED,
    metrics: dict[str, Any] | None = None, **flags: Any,
) -> Submission:
    image = image or make_image(session, user)
    sub = Submission(phase_id=phase.id, user_id=user.id, image_id=image.id, status=status,
                     **flags)
    session.add(sub)
    session.flush()
    if metrics is not None:
        session.add(AggregateResult(submission_id=sub.id, metrics=metrics, statistics={},
                                    cases_scored=1))
        session.flush()
    # As the pipeline's finalize does: the phase's stored leaderboard is stale now.
    leaderboards.invalidate(session, phase.id)
    return sub
