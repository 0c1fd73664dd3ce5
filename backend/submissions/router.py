from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy.orm import Session

from backend import access, kept, kept_lane
from backend.access import SubmissionView
from backend.db import SessionDep, in_request_session
from backend.deps import CurrentUser, current_user
from backend.errors import ForbiddenError, NotFoundError
from backend.models import Phase, Submission, User
from backend.models.submissions import IDEMPOTENCY_KEY_MAX
from backend.pagination import PageDep
from backend.submissions import dose, service
from backend.submissions.schemas import CaseRunOut, SubmissionFlags, SubmissionIn, SubmissionOut

router = APIRouter(tags=["submissions"])


def submission_out(
    session: Session, sub: Submission, view: SubmissionView, username: str = ""
) -> SubmissionOut:
    out = SubmissionOut.model_validate(sub)
    if not username:
        user = session.get(User, sub.user_id)
        username = user.username if user else ""
    out.username = username
    agg = service.scores(session, sub, view)
    out.metrics = agg.metrics if agg is not None else None
    return out


def _organizer_out(session: Session, sub: Submission) -> SubmissionOut:
    phase = session.get(Phase, sub.phase_id)
    assert phase is not None
    return submission_out(session, sub, access.submission_view(phase, True))


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX,
    pattern=r"^[\x21-\x7e]+$",
    description="Any unique printable string (e.g. a UUID). A repeat of the request with the "
    "same key (after a lost answer) returns the submission the first one made, with the header "
    "`Idempotent-Replayed: true`, instead of making a second one.")]


@router.post("/api/challenges/{slug}/phases/{phase_slug}/submissions", status_code=201)
def create_submission(
    slug: str, phase_slug: str, data: SubmissionIn, response: Response, session: SessionDep,
    user: CurrentUser, idempotency_key: IdempotencyKey = None,
) -> SubmissionOut:
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    sub = None
    if idempotency_key is not None:
        sub = service.replay(session, user, phase, data.image_id, idempotency_key)
        if sub is not None:
            response.headers["Idempotent-Replayed"] = "true"
    if sub is None:
        sub = service.create(session, user, challenge, phase, data.image_id, data.comment,
                             idempotency_key)
    return submission_out(session, sub, access.submission_view(phase, False), user.username)


@router.get("/api/challenges/{slug}/phases/{phase_slug}/submissions")
def list_submissions(
    request: Request, response: Response, slug: str, phase_slug: str, session: SessionDep,
    user: CurrentUser, page: PageDep,
) -> list[SubmissionOut]:
    """Organisers see every submission of the phase; participants their own. Newest first,
    a page at a time (``Link: rel="next"`` names the next one)."""
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    view = access.submission_view(phase, access.is_organizer(session, user, challenge.id))
    out = [
        submission_out(session, s, view, name)
        for s, name in service.list_for_phase(session, user, challenge, phase, page.offset,
                                              page.limit)
    ]
    page.link_next(request, response, len(out))
    return out


# Answers as last built per viewer (16 MiB a process), served while the state they were built
# from holds: a client polling a submission costs one query instead of five.
_kept = kept.Kept(16 << 20)


@router.get("/api/submissions/{submission_id}", response_model=SubmissionOut)
async def get_submission(request: Request, submission_id: int) -> Response:
    """With an ETag: a client that sends it back (If-None-Match) gets 304 while the
    submission, its scores and the viewer's rights are unchanged. Async, with its session's
    work in one thread-pool call: the endpoint clients poll."""
    found = await kept_lane.kept_body(request, submission_id, _kept)
    if found is not None:
        return _answer(request, *found)
    return await in_request_session(lambda s: _submission_answer(request, s, submission_id))


def _submission_answer(request: Request, session: Session, submission_id: int) -> Response:
    user = current_user(request, session)
    state = service.view_state(session, user, submission_id)
    if state is None:  # no such submission: the access checks answer
        return Response(_build(session, user, submission_id), media_type="application/json")
    body = _kept.get((submission_id, user.id), state)  # kept: access passed in this state
    if body is None:
        body = _build(session, user, submission_id)
        _kept.put((submission_id, user.id), state, body)
    return _answer(request, state, body)


def _build(session: Session, user: User, submission_id: int) -> bytes:
    sub, _, view = service.open_submission(session, user, submission_id)  # the access checks
    return submission_out(session, sub, view).model_dump_json().encode()


def _answer(request: Request, state: tuple[Any, ...], body: bytes) -> Response:
    headers = {"Cache-Control": "private, no-cache", "ETag": kept.etag(state)}
    if kept.not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/api/submissions/{submission_id}/cases")
def list_case_runs(
    request: Request, response: Response, submission_id: int, session: SessionDep,
    user: CurrentUser, page: PageDep,
) -> list[CaseRunOut]:
    """By case name, a page at a time."""
    sub, _, view = service.open_submission(session, user, submission_id)
    if not view.cases:
        raise ForbiddenError("Per-case results of this phase are hidden from participants.")
    out = [
        CaseRunOut(
            case_name=c.name,
            status=c.run.status,
            attempts=c.run.attempts,
            exit_code=c.run.exit_code,
            duration_s=c.run.duration_s,
            error_message=c.run.error_message,
            warning=c.run.warning,
            metrics=c.metrics,
            stdout=c.run.stdout if view.logs else None,
            stderr=c.run.stderr if view.logs else None,
        )
        for c in service.case_records(session, sub, view, page.offset, page.limit)
    ]
    page.link_next(request, response, len(out))
    return out


@router.get("/api/submissions/{submission_id}/cases/{case_name}/dose")
def case_dose_views(submission_id: int, case_name: str, session: SessionDep,
                    user: CurrentUser) -> dict[str, Any]:
    """The case's stored dose views this viewer may see: which maps (``views``; the slices
    are at ``/submissions/{id}/cases/{case}/dose.png``) and, per modality, the DVH curves
    (volume % at ``dose_levels_gy``) with the DVH metric's points; the reference CT's curves,
    points and the gamma pass rate only where the viewer may see the ground truth."""
    found = dose.open_case(session, user, submission_id, case_name)
    meta = dose.meta_of(found.prediction, found.case.name)
    if meta is None:
        raise NotFoundError(f"Case '{case_name}' has no dose views (it has no plans, or it is "
                            "not scored yet).")
    return {"case": found.case.name, "views": list(found.view.dose),
            "ground_truth": found.view.ground_truth, "engine": meta.get("engine", ""),
            "modalities": dose.dvh_data(meta, found.view.ground_truth)}


@router.post("/api/submissions/{submission_id}/cancel")
def cancel(submission_id: int, session: SessionDep, user: CurrentUser) -> SubmissionOut:
    sub = service.cancel(session, user, submission_id)
    _, _, view = service.open_submission(session, user, sub.id)  # participants cancel their own
    return submission_out(session, sub, view)


@router.post("/api/submissions/{submission_id}/reevaluate")
def reevaluate(submission_id: int, session: SessionDep, user: CurrentUser) -> SubmissionOut:
    sub = service.reevaluate(session, user, submission_id)
    return _organizer_out(session, sub)


@router.patch("/api/submissions/{submission_id}")
def set_flags(
    submission_id: int, data: SubmissionFlags, session: SessionDep, user: CurrentUser
) -> SubmissionOut:
    """Organisers: hide, disqualify or mark as baseline."""
    sub = service.set_flags(session, user, submission_id, data)
    return _organizer_out(session, sub)
