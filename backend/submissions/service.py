from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import access
from backend.access import SubmissionView
from backend.challenges.service import accepting_reason
from backend.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TooManyRequestsError,
    UnprocessableError,
)
from backend.leaderboards import service as leaderboards
from backend.models import (
    ACTIVE_STATUSES,
    AggregateResult,
    AlgorithmImage,
    Case,
    CaseRun,
    Challenge,
    ImageStatus,
    Phase,
    Submission,
    SubmissionStatus,
    User,
    utcnow,
)
from backend.submissions import pipeline, state
from backend.submissions import repository as repo
from backend.submissions.schemas import SubmissionFlags


def _period_text(phase: Phase) -> str:
    if phase.submission_period_s is None:
        return "in this phase"
    hours = phase.submission_period_s / 3600
    return f"per {hours:g} hours" if hours != 24 else "per day"


def replay(session: Session, user: User, phase: Phase, image_id: int,
           idempotency_key: str) -> Submission | None:
    """The submission an earlier request with this Idempotency-Key made, if any (a client
    repeating a request whose answer it lost). Takes the user's submission lock first, so a
    repeat racing the first request waits for it and then finds its submission."""
    repo.lock_user(session, user.id)
    earlier = repo.by_idempotency_key(session, user.id, idempotency_key)
    if earlier is not None and (earlier.phase_id, earlier.image_id) != (phase.id, image_id):
        raise UnprocessableError(
            f"The Idempotency-Key '{idempotency_key}' was already used for submission "
            f"#{earlier.id} (another phase or image); send a new key for a new submission."
        )
    return earlier


def create(
    session: Session, user: User, challenge: Challenge, phase: Phase, image_id: int,
    comment: str = "", idempotency_key: str | None = None,
) -> Submission:
    organizer = access.is_organizer(session, user, challenge.id)
    if not organizer and access.role_in(session, user, challenge.id) is None:
        raise ForbiddenError(
            f"Register for '{challenge.slug}' first (POST /api/challenges/{challenge.slug}"
            "/register or `syntharena register`)."
        )
    reason = accepting_reason(phase)
    # Organisers may submit outside the window (baselines, checks) but need a dataset.
    if reason is not None and (not organizer or phase.dataset_version_id is None):
        raise ConflictError(reason)
    image = session.get(AlgorithmImage, image_id)
    if image is None or image.owner_id != user.id:
        raise NotFoundError(f"You have no image {image_id}; upload one first.")
    if image.status is not ImageStatus.VALID:
        raise ConflictError(
            f"Image #{image.id} is {image.status.value}: {image.validation_message}"
        )
    repo.lock_user(session, user.id)  # held until commit: concurrent submits queue here
    active = repo.active_submission(session, phase.id, user.id)
    if active is not None:
        raise ConflictError(
            f"Your submission #{active.id} is still {active.status.value}; wait until it "
            "finishes before submitting again."
        )
    now = utcnow()
    if not organizer:
        period = phase.submission_period_s
        since = now - timedelta(seconds=period) if period is not None else None
        used = repo.counted_since(session, phase.id, user.id, since)
        if len(used) >= phase.submissions_per_period:
            message = (
                f"You have used {len(used)} of {phase.submissions_per_period} submissions "
                f"{_period_text(phase)} (failed ones do not count)."
            )
            if period is not None and used:
                after = used[0] + timedelta(seconds=period)
                message += f" Next one possible after {after:%Y-%m-%d %H:%M} UTC."
            raise TooManyRequestsError(message)
    assert phase.dataset_version_id is not None
    sub = Submission(
        phase_id=phase.id,
        user_id=user.id,
        image_id=image.id,
        status=SubmissionStatus.PENDING,
        status_changed_at=now,
        cases_total=repo.case_count(session, phase.dataset_version_id),
        comment=comment,
        idempotency_key=idempotency_key,
        current_step="queued",
        is_baseline=False,
    )
    try:
        with session.begin_nested():
            session.add(sub)
            session.flush()
    except IntegrityError as exc:  # the partial unique index: another active submission
        raise ConflictError("You already have a submission in progress in this phase.") from exc
    pipeline.enqueue_start(session, sub.id)
    return sub


@dataclass(frozen=True)
class Opened:
    """A submission as its page shows it, and what the viewer may see of it."""

    sub: Submission
    phase: Phase
    challenge: Challenge
    owner: User
    image: AlgorithmImage | None
    view: SubmissionView


def open_page(session: Session, user: User, submission_id: int) -> Opened:
    """The submission with its phase, challenge, owner and image (one query), and what this
    viewer may see of it (``access``). NotFoundError for anyone but its owner and the
    challenge's organisers: a submission's existence is not disclosed."""
    row = repo.with_context(session, submission_id)
    if row is None:
        raise NotFoundError(f"There is no submission {submission_id}.")
    sub, phase, challenge, owner, image = row
    organizer = access.is_organizer(session, user, phase.challenge_id)
    if not organizer and sub.user_id != user.id:
        raise NotFoundError(f"There is no submission {submission_id}.")
    return Opened(sub, phase, challenge, owner, image, access.submission_view(phase, organizer))


def get_for_viewer(session: Session, user: User, submission_id: int) -> tuple[Submission, Phase,
                                                                              bool]:
    """The submission, its phase and whether the viewer organises the challenge."""
    opened = open_page(session, user, submission_id)
    return opened.sub, opened.phase, opened.view.organizer


def open_submission(session: Session, user: User, submission_id: int) -> tuple[
        Submission, Phase, SubmissionView]:
    """The submission, its phase and what this viewer may see of it (``access``)."""
    opened = open_page(session, user, submission_id)
    return opened.sub, opened.phase, opened.view


def view_state(session: Session, user: User, submission_id: int) -> tuple[Any, ...] | None:
    """What this viewer's page of the submission is built from (``repo.view_state``) and the
    viewer's own row (name, admin, last change); None: no such submission. It says nothing
    about access: a page built for this state passed the access checks of this state."""
    return repo.view_state(session, submission_id,
                           repo.Viewer(user.id, user.is_admin, user.updated_at))


def scores(session: Session, sub: Submission, view: SubmissionView) -> AggregateResult | None:
    """The submission's aggregate, where the viewer may see scores."""
    return repo.aggregate(session, sub.id) if view.scores else None


@dataclass(frozen=True)
class CaseRecord:
    run: CaseRun
    name: str
    metrics: dict[str, Any] | None  # None: not scored, or scores hidden from this viewer
    case: Case


def case_records(session: Session, sub: Submission, view: SubmissionView, offset: int = 0,
                 limit: int | None = None) -> list[CaseRecord]:
    """The case runs by case name, where the viewer may see cases or logs; metrics only where
    the viewer may see per-case scores."""
    if not (view.cases or view.logs):
        return []
    metrics = repo.case_metrics(session, sub.id) if view.case_scores else {}
    return [CaseRecord(run, case.name, metrics.get(run.case_id), case)
            for run, case in repo.case_runs(session, sub.id, offset, limit)]


def case_of(session: Session, submission_id: int, case_name: str) -> tuple[Case, CaseRun]:
    for run, case in repo.case_runs(session, submission_id):
        if case.name == case_name:
            return case, run
    raise NotFoundError(f"This submission has no case '{case_name}'.")


def case_metrics(session: Session, submission_id: int) -> dict[int, dict[str, object]]:
    """Per-case metrics by case id (for an organiser's or the leaderboard's views)."""
    return repo.case_metrics(session, submission_id)


def case_runs_of(session: Session, submission_id: int) -> list[tuple[CaseRun, str]]:
    """(case run, case name) by case name, for views that decide themselves what to show."""
    return [(run, case.name) for run, case in repo.case_runs(session, submission_id)]


def aggregate_of(session: Session, submission_id: int) -> AggregateResult | None:
    return repo.aggregate(session, submission_id)


def own_in_phase(session: Session, phase_id: int, user_id: int) -> list[Submission]:
    return [sub for sub, _ in repo.of_phase(session, phase_id, user_id)]


def used_since(session: Session, phase: Phase, user: User,
               since: datetime | None) -> list[datetime]:
    """When the user's submissions that count against the phase's limit were made."""
    return repo.counted_since(session, phase.id, user.id, since)


def list_for_phase(
    session: Session, user: User, challenge: Challenge, phase: Phase, offset: int = 0,
    limit: int | None = None,
) -> Sequence[tuple[Submission, str]]:
    """Newest first (``offset``/``limit``: one page)."""
    organizer = access.is_organizer(session, user, challenge.id)
    return repo.of_phase(session, phase.id, None if organizer else user.id, offset, limit)


def _require_organizer(session: Session, user: User, phase: Phase) -> None:
    if not access.is_organizer(session, user, phase.challenge_id):
        raise ForbiddenError("Only the challenge's organisers may do this.")


def cancel(session: Session, user: User, submission_id: int) -> Submission:
    """Organisers cancel any submission of their challenge; participants their own."""
    sub, _, organizer = get_for_viewer(session, user, submission_id)
    sub = state.lock_submission(session, sub.id)
    if sub.status not in ACTIVE_STATUSES:
        raise ConflictError(f"Submission #{sub.id} is {sub.status.value}; nothing to cancel.")
    sub = state.transition(session, sub.id, sub.status, SubmissionStatus.CANCELLED,
                           current_step="cancelled by an organiser" if organizer
                           else "cancelled by its owner")
    pipeline.cancel_open_runs(session, sub.id)
    leaderboards.invalidate(session, sub.phase_id)
    return sub


def reevaluate(session: Session, user: User, submission_id: int) -> Submission:
    sub, phase, _ = get_for_viewer(session, user, submission_id)
    _require_organizer(session, user, phase)
    sub = state.lock_submission(session, sub.id)
    if sub.status in ACTIVE_STATUSES:
        raise ConflictError(f"Submission #{sub.id} is still {sub.status.value}; cancel it first.")
    other = repo.active_submission(session, sub.phase_id, sub.user_id)
    if other is not None:
        raise ConflictError(
            f"The same user's submission #{other.id} is {other.status.value}; re-evaluate "
            "after it finishes."
        )
    repo.clear_evaluation(session, sub.id)
    sub = state.transition(session, sub.id, sub.status, SubmissionStatus.PENDING,
                           current_step="queued for re-evaluation")
    leaderboards.invalidate(session, sub.phase_id)
    pipeline.enqueue_start(session, sub.id)
    return sub


def set_flags(session: Session, user: User, submission_id: int, flags: SubmissionFlags) -> (
    Submission
):
    sub, phase, _ = get_for_viewer(session, user, submission_id)
    _require_organizer(session, user, phase)
    for key, value in flags.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(sub, key, value)
    session.flush()
    leaderboards.invalidate(session, sub.phase_id)
    return sub
