from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from backend import access
from backend.db import SessionDep
from backend.deps import CurrentUser
from backend.errors import ForbiddenError
from backend.models import Phase, Submission, User
from backend.submissions import repository as repo
from backend.submissions import service
from backend.submissions.schemas import CaseRunOut, SubmissionFlags, SubmissionIn, SubmissionOut

router = APIRouter(tags=["submissions"])


def submission_out(
    session: Session, sub: Submission, phase: Phase, organizer: bool, username: str = ""
) -> SubmissionOut:
    out = SubmissionOut.model_validate(sub)
    if not username:
        user = session.get(User, sub.user_id)
        username = user.username if user else ""
    out.username = username
    # Participants see their own scores only where the phase's leaderboard is public.
    if organizer or phase.leaderboard_public:
        agg = repo.aggregate(session, sub.id)
        out.metrics = agg.metrics if agg is not None else None
    return out


@router.post("/api/challenges/{slug}/phases/{phase_slug}/submissions", status_code=201)
def create_submission(
    slug: str, phase_slug: str, data: SubmissionIn, session: SessionDep, user: CurrentUser
) -> SubmissionOut:
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    sub = service.create(session, user, challenge, phase, data.image_id, data.comment)
    return submission_out(session, sub, phase, False, user.username)


@router.get("/api/challenges/{slug}/phases/{phase_slug}/submissions")
def list_submissions(
    slug: str, phase_slug: str, session: SessionDep, user: CurrentUser
) -> list[SubmissionOut]:
    """Organisers see every submission of the phase; participants their own."""
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    organizer = access.is_organizer(session, user, challenge.id)
    return [
        submission_out(session, s, phase, organizer, name)
        for s, name in service.list_for_phase(session, user, challenge, phase)
    ]


@router.get("/api/submissions/{submission_id}")
def get_submission(submission_id: int, session: SessionDep, user: CurrentUser) -> SubmissionOut:
    sub, phase, organizer = service.get_for_viewer(session, user, submission_id)
    return submission_out(session, sub, phase, organizer)


@router.get("/api/submissions/{submission_id}/cases")
def list_case_runs(
    submission_id: int, session: SessionDep, user: CurrentUser
) -> list[CaseRunOut]:
    sub, phase, organizer = service.get_for_viewer(session, user, submission_id)
    if not organizer and not phase.show_case_results:
        raise ForbiddenError("Per-case results of this phase are hidden from participants.")
    show_metrics = organizer or phase.leaderboard_public
    show_logs = organizer or phase.show_case_logs
    metrics = repo.case_metrics(session, sub.id) if show_metrics else {}
    out: list[CaseRunOut] = []
    for run, case_name in repo.case_runs(session, sub.id):
        row = CaseRunOut(
            case_name=case_name,
            status=run.status,
            attempts=run.attempts,
            exit_code=run.exit_code,
            duration_s=run.duration_s,
            error_message=run.error_message,
            metrics=metrics.get(run.case_id),
            stdout=run.stdout if show_logs else None,
            stderr=run.stderr if show_logs else None,
        )
        out.append(row)
    return out


@router.post("/api/submissions/{submission_id}/cancel")
def cancel(submission_id: int, session: SessionDep, user: CurrentUser) -> SubmissionOut:
    sub = service.cancel(session, user, submission_id)
    phase = session.get(Phase, sub.phase_id)
    assert phase is not None
    return submission_out(session, sub, phase, True)


@router.post("/api/submissions/{submission_id}/reevaluate")
def reevaluate(submission_id: int, session: SessionDep, user: CurrentUser) -> SubmissionOut:
    sub = service.reevaluate(session, user, submission_id)
    phase = session.get(Phase, sub.phase_id)
    assert phase is not None
    return submission_out(session, sub, phase, True)


@router.patch("/api/submissions/{submission_id}")
def set_flags(
    submission_id: int, data: SubmissionFlags, session: SessionDep, user: CurrentUser
) -> SubmissionOut:
    """Organisers: hide, disqualify or mark as baseline."""
    sub = service.set_flags(session, user, submission_id, data)
    phase = session.get(Phase, sub.phase_id)
    assert phase is not None
    return submission_out(session, sub, phase, True)
