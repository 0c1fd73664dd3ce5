"""Participant pages about submissions: leaderboard, submit, my submissions (live status),
submission detail with plots and the slice viewer (PNG slices with access rules)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backend import access, kept, kept_lane, object_cache
from backend.db import SessionDep, in_request_session
from backend.errors import AppError, BadRequestError, NotFoundError, ServiceUnavailableError
from backend.leaderboards import service as leaderboards_service
from backend.models import Challenge
from backend.storage import StorageUnavailableError
from backend.submissions import dose as case_dose
from backend.submissions import service as submissions_service
from backend.web import detail_view, dose_view, flash, kept_pages
from backend.web.deps import CsrfChecked, PageUser, WebUser, page_user_of, rollback_on_error
from backend.web.slices import Axis, SliceKind, render_slice
from backend.web.submission_views import all_my_submissions, submission_status
from backend.web.templating import render, templates

router = APIRouter(include_in_schema=False)


@router.get("/challenges/{slug}/{phase_slug}/leaderboard.csv")
def leaderboard_csv(slug: str, phase_slug: str, session: SessionDep, user: WebUser) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    body = leaderboards_service.to_csv(leaderboards_service.build(session, user, challenge,
                                                                  phase))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{slug}-{phase_slug}.csv"'},
    )


@router.post("/challenges/{slug}/{phase_slug}/submit", dependencies=[CsrfChecked])
def submit(
    slug: str,
    phase_slug: str,
    session: SessionDep,
    user: PageUser,
    image_id: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    back = f"/challenges/{slug}/{phase_slug}#submit"
    if not image_id.isdigit():
        return _redirect(back, "Upload an image (or pick one) before submitting.", "error")
    try:
        with rollback_on_error(session):
            sub = submissions_service.create(session, user, challenge, phase, int(image_id),
                                             comment.strip()[:500])
    except AppError as err:
        return _redirect(back, err.message, "error")
    return _redirect(f"/submissions/{sub.id}",
                     f"Submission #{sub.id} was submitted; its status below updates by itself.")


def _redirect(url: str, message: str, kind: flash.Kind = "ok") -> Response:
    response = RedirectResponse(url, status_code=303)
    flash.add(response, message, kind)
    return response


@router.get("/submissions")
def my_submissions_page(
    request: Request, session: SessionDep, user: PageUser, challenge: str | None = None
) -> Response:
    rows = all_my_submissions(session, user, challenge)
    return render(request, "submissions.html", {"rows": rows, "challenge_filter": challenge},
                  user=user)


# Submission pages as last rendered per viewer (64 MiB a process): a reload, and the crowd of
# participants reloading their results, cost one query instead of ~10 and the rendering.
_kept = kept.Kept(64 << 20)


@router.get("/submissions/{submission_id}")
async def submission_page(request: Request, submission_id: int) -> Response:
    """The page participants reload most: a kept page is answered on the event loop
    (``kept_lane``); otherwise the session's work is one thread-pool call (the viewer, the
    state, the kept page or the build)."""
    if flash.COOKIE not in request.cookies:  # a page with a message is not kept
        found = await kept_lane.kept_body(request, submission_id, _kept, str(request.base_url))
        if found is not None:
            return _kept_answer(request, *found)
    return await in_request_session(lambda s: _submission_page(request, s, submission_id))


def _submission_page(request: Request, session: Session, submission_id: int) -> Response:
    """Served from ``_kept`` while the database state it was built from is unchanged (asked
    before building, so a change during the build shows at the next request)."""
    user = page_user_of(request, session)
    state = None
    if flash.COOKIE not in request.cookies:  # a page with a message is not kept
        state = submissions_service.view_state(session, user, submission_id)
    key = (submission_id, user.id, str(request.base_url))
    if state is not None:
        body = _kept.get(key, state)  # kept: the access checks passed in this state
        if body is not None:
            return _kept_answer(request, state, body)
    ctx = detail_view.build(session, user, submission_id)  # the access checks
    ctx["next_url"] = f"/submissions/{submission_id}"
    response = render(request, "submission.html", ctx, user=user)
    if state is not None and ctx["complete"]:
        _kept.put(key, state, kept_pages.slotted(request, response))
        headers = _page_headers(request, state)
        if kept.not_modified(request, headers["ETag"]):  # e.g. kept by another process
            return Response(status_code=304, headers=headers)
        response.headers.update(headers)
    return response


def _page_headers(request: Request, state: tuple[object, ...]) -> dict[str, str]:
    return {"Cache-Control": "private, no-cache", "ETag": kept_pages.validator(request, state)}


def _kept_answer(request: Request, state: tuple[object, ...], body: bytes) -> Response:
    headers = _page_headers(request, state)
    if kept.not_modified(request, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return kept_pages.with_token(request, body, headers)


_kept_status = kept.Kept(8 << 20)


@router.get("/submissions/{submission_id}/status")
async def submission_status_fragment(request: Request, submission_id: int) -> Response:
    """The live status widget alone; HTMX polls it every 2 s while the submission is active
    (kept like the page: a poll between two changes costs one query)."""
    found = await kept_lane.kept_body(request, submission_id, _kept_status)
    if found is not None:
        return HTMLResponse(found[1], headers={"Cache-Control": "no-store"})
    return await in_request_session(lambda s: _status_fragment(request, s, submission_id))


def _status_fragment(request: Request, session: Session, submission_id: int) -> Response:
    user = page_user_of(request, session)
    state = submissions_service.view_state(session, user, submission_id)
    key = (submission_id, user.id)
    body = None if state is None else _kept_status.get(key, state)
    if body is None:
        sub, _, _ = submissions_service.get_for_viewer(session, user, submission_id)
        s = submission_status(session, sub)
        s.reload_on_finish = True
        body = templates.get_template("partials/status.html").render(s=s).encode()
        if state is not None:
            _kept_status.put(key, state, body)
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


@router.get("/submissions/{submission_id}/cases/{case_name}/slice.png")
def slice_png(
    submission_id: int,
    case_name: str,
    session: SessionDep,
    user: PageUser,
    kind: Annotated[str, Query()] = "input",
    axis: Annotated[str, Query()] = "axial",
    index: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    try:
        slice_kind, slice_axis = SliceKind(kind), Axis(axis)
    except ValueError as err:
        raise BadRequestError("kind is input|sct|ct|diff; axis is axial|coronal|sagittal.") from err
    sub, phase, view = submissions_service.open_submission(session, user, submission_id)
    if slice_kind.value not in view.images:
        raise NotFoundError("This image is not shown to participants in this phase.")
    case, run = submissions_service.case_of(session, sub.id, case_name)
    challenge = session.get(Challenge, phase.challenge_id)
    assert challenge is not None
    needs = {SliceKind.INPUT: ("input",), SliceKind.SCT: ("sct",), SliceKind.CT: ("ct",),
             SliceKind.DIFF: ("sct", "ct")}[slice_kind]
    keys = {"input": case.input_image_path, "sct": run.prediction_path,
            "ct": case.ground_truth_path}
    with contextlib.ExitStack() as files:
        paths = {name: _local(files, keys[name]) for name in needs}
        png = render_slice(slice_kind, slice_axis, index, input_path=paths.get("input"),
                           sct_path=paths.get("sct"), ct_path=paths.get("ct"))
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


def _local(files: contextlib.ExitStack, key: str | None) -> Path | None:
    """A data file local to this API host (from the storage), None when not stored."""
    if not key:
        return None
    try:
        return files.enter_context(object_cache.local_file(key))
    except FileNotFoundError:
        return None
    except StorageUnavailableError as exc:
        raise ServiceUnavailableError(
            f"The image could not be read from the storage ({exc.strerror}); try again "
            "shortly.") from exc


@router.get("/submissions/{submission_id}/cases/{case_name}/dose.png")
def dose_png(
    submission_id: int,
    case_name: str,
    session: SessionDep,
    user: PageUser,
    kind: Annotated[str, Query()] = "dose_sct",
    modality: Annotated[str, Query()] = "photon",
    axis: Annotated[str, Query()] = "axial",
    index: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """One slice of a stored dose view over the CT (over the sCT where the viewer may not see
    the reference CT)."""
    if kind not in dose_view.TITLES or modality not in dose_view.MODALITIES:
        raise BadRequestError("kind is dose_ct|dose_sct|dose_diff|gamma; modality is "
                              "photon|proton.")
    try:
        slice_axis = Axis(axis)
    except ValueError as err:
        raise BadRequestError("axis is axial|coronal|sagittal.") from err
    found = case_dose.open_case(session, user, submission_id, case_name)
    if kind not in found.view.dose:
        raise NotFoundError("This dose view is not shown to participants in this phase.")
    with contextlib.ExitStack() as files:
        background = _local(files, found.case.ground_truth_path if found.view.ground_truth
                            else found.prediction)
        if background is None:
            raise NotFoundError("The image under this dose view is not stored.")
        png = dose_view.render(kind, modality, slice_axis, index, prediction=found.prediction,
                               case_name=found.case.name, background=background)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@router.get("/submissions/{submission_id}/cases/{case_name}/dvh")
def dvh_fragment(submission_id: int, case_name: str, session: SessionDep, user: PageUser,
                 modality: Annotated[str, Query()] = "photon") -> Response:
    """The DVH plot of one case and modality (an HTML fragment the viewer inserts)."""
    found = case_dose.open_case(session, user, submission_id, case_name)
    data = case_dose.dvh_data(case_dose.meta_of(found.prediction, found.case.name),
                              found.view.ground_truth)
    return HTMLResponse(str(dose_view.dvh_plot(data, modality)),
                        headers={"Cache-Control": "private, max-age=60"})
