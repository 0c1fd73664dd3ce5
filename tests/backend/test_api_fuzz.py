"""Schema-driven fuzzing (schemathesis) of every JSON API operation, in process (ASGI), as an
anonymous visitor, a participant and an organiser: no generated input may get a 5xx, and every
answer must conform to the OpenAPI schema. Bounded (a few examples per operation, no
shrinking phase beyond Hypothesis's default budget) so it runs in the normal `pytest` run.

Half of the examples aim at objects that exist (the seeded challenge, phase, submission,
image, upload), so the checks reach past the 404 of a random id."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)
from sqlalchemy.orm import Session

from backend.config import settings
from backend.images import service as images_service
from backend.images.schemas import UploadIn
from backend.main import create_app
from backend.models import ChallengeRole
from backend.security import make_session_cookie
from tests.backend.conftest import TaskQueue
from tests.backend.factories import (
    add_member,
    make_challenge,
    make_image,
    make_phase,
    make_submission,
    make_user,
)

app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
EXAMPLES = int(os.environ.get("SYNTHARENA_FUZZ_EXAMPLES", "12"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@dataclass
class Seeded:
    cookies: dict[str, dict[str, str]]  # role -> the session cookie it sends
    real: dict[str, str | int]  # path parameter -> a value that exists


@pytest.fixture
def seeded(db_session: Session, task_queue: TaskQueue) -> Iterator[Seeded]:
    organizer, participant = make_user(db_session), make_user(db_session)
    challenge = make_challenge(db_session, organizer)
    add_member(db_session, challenge, participant, ChallengeRole.PARTICIPANT)
    phase = make_phase(db_session, challenge, submissions_per_period=1000)
    image = make_image(db_session, participant)
    submission = make_submission(db_session, phase, participant, image)
    upload = images_service.create_upload(db_session, participant,
                                          UploadIn(name="algo:1", size_bytes=1000))
    # Session cookies, not API tokens: a generated DELETE /api/auth/tokens/{id} cannot revoke
    # the credentials of the run itself.
    name = settings.session_cookie_name
    cookies = {"anonymous": {},
               "participant": {name: make_session_cookie(participant.id,
                                                         participant.password_hash)},
               "organizer": {name: make_session_cookie(organizer.id, organizer.password_hash)}}
    yield Seeded(cookies, {"slug": challenge.slug, "phase_slug": phase.slug,
                           "submission_id": submission.id, "image_id": image.id,
                           "upload_id": upload.id, "version": 1})


@schema.parametrize()
@hsettings(max_examples=EXAMPLES, deadline=None,
           suppress_health_check=list(HealthCheck))
def test_no_server_error_and_schema_conformance(case: schemathesis.Case, seeded: Seeded) -> None:
    params = case.path_parameters or {}
    # Deterministic per example (Hypothesis replays failures): half of them hit real objects.
    if params and random.Random(repr(sorted(params.items()))).random() < 0.5:
        for key in params:
            if key in seeded.real:
                params[key] = seeded.real[key]
    for role, cookies in seeded.cookies.items():
        response = case.call(cookies=cookies)
        case.validate_response(response, checks=CHECKS)
        assert response.status_code < 500, (role, response.status_code, response.text[:300])
