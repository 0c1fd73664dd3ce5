"""Submission view models: rows of "my submissions", the live status, quotas, images."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from backend import access
from backend.challenges import service as challenges_service
from backend.images import service as images_service
from backend.models import (
    AlgorithmImage,
    Challenge,
    ImageStatus,
    Phase,
    Submission,
    User,
    utcnow,
)
from backend.numbers import finite_or_none
from backend.submissions import service as submissions_service
from backend.web.status import StatusView, status_view


@dataclass
class SubmissionRow:
    id: int
    created_at: datetime
    comment: str
    image_name: str
    status: StatusView
    primary_label: str
    primary_value: float | None
    challenge_slug: str
    challenge_title: str
    phase_slug: str
    phase_title: str


def _primary_value(session: Session, sub: Submission, phase: Phase, organizer: bool) -> (
    float | None
):
    agg = submissions_service.scores(session, sub, access.submission_view(phase, organizer))
    return None if agg is None else finite_or_none(agg.metrics.get(phase.primary_metric))


def submission_status(session: Session, sub: Submission) -> StatusView:
    """The status, naming the first failed case when there is one."""
    failed = None
    if sub.status.value == "failed":
        for run, name in submissions_service.case_runs_of(session, sub.id):
            if run.status.value in ("failed", "timed_out") and run.error_message:
                failed = (name, run)
                break
    if failed is None:
        return status_view(sub)
    name, run = failed
    return status_view(sub, failed_case=name, failed_case_status=run.status,
                       failed_case_error=run.error_message)


def submission_row(
    session: Session, sub: Submission, phase: Phase, challenge: Challenge, organizer: bool
) -> SubmissionRow:
    image = session.get(AlgorithmImage, sub.image_id)
    from backend.web.metrics_meta import metric_meta

    return SubmissionRow(
        id=sub.id,
        created_at=sub.created_at,
        comment=sub.comment,
        image_name=image.name if image is not None else f"image {sub.image_id}",
        status=submission_status(session, sub),
        primary_label=metric_meta(phase.primary_metric).label,
        primary_value=_primary_value(session, sub, phase, organizer),
        challenge_slug=challenge.slug,
        challenge_title=challenge.title,
        phase_slug=phase.slug,
        phase_title=phase.title,
    )


def my_submissions(session: Session, user: User | None, phase: Phase) -> list[SubmissionRow]:
    """The user's own submissions to one phase, newest first (organisers: theirs too)."""
    if user is None:
        return []
    challenge = session.get(Challenge, phase.challenge_id)
    assert challenge is not None
    organizer = access.is_organizer(session, user, challenge.id)
    return [
        submission_row(session, s, phase, challenge, organizer)
        for s in submissions_service.own_in_phase(session, phase.id, user.id)
    ]


def all_my_submissions(
    session: Session, user: User, challenge_slug: str | None = None
) -> list[SubmissionRow]:
    rows: list[SubmissionRow] = []
    for challenge in challenges_service.visible(session, user):
        if challenge_slug and challenge.slug != challenge_slug:
            continue
        if access.role_in(session, user, challenge.id) is None and not user.is_admin:
            continue
        organizer = access.is_organizer(session, user, challenge.id)
        for phase in challenges_service.phases_of(session, challenge.id):
            for s in submissions_service.own_in_phase(session, phase.id, user.id):
                rows.append(submission_row(session, s, phase, challenge, organizer))
    rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return rows


def my_valid_images(session: Session, user: User | None) -> list[AlgorithmImage]:
    if user is None:
        return []
    images = [i for i in images_service.list_images(session, user)
              if i.status is ImageStatus.VALID]
    return sorted(images, key=lambda i: i.created_at, reverse=True)


@dataclass
class Quota:
    limit: int
    used: int
    remaining: int
    period: str
    explanation: str


def quota(session: Session, user: User | None, phase: Phase) -> Quota | None:
    """Submissions left in the current period (the same count the service enforces)."""
    if user is None:
        return None
    if access.role_in(session, user, phase.challenge_id) is None and not user.is_admin:
        return None
    period = phase.submission_period_s
    now = utcnow()
    since = now - timedelta(seconds=period) if period is not None else None
    used = submissions_service.used_since(session, phase, user, since)
    remaining = max(0, phase.submissions_per_period - len(used))
    if period is None:
        period_text = "in this phase"
    elif period == 86400:
        period_text = "per day"
    else:
        period_text = f"per {period / 3600:g} hours"
    explanation = ""
    if remaining == 0:
        explanation = f"You have used all {phase.submissions_per_period} submissions {period_text}."
        if period is not None and used:
            after = used[0] + timedelta(seconds=period)
            explanation += f" The next one is possible after {after:%Y-%m-%d %H:%M} UTC."
    return Quota(
        limit=phase.submissions_per_period,
        used=len(used),
        remaining=remaining,
        period=period_text,
        explanation=explanation,
    )
