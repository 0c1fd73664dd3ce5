"""Organiser actions on submissions: list per phase, cancel, re-evaluate, hide, disqualify,
mark as baseline, download results (CSV/JSON)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from backend import access
from backend.challenges import service as challenges_service
from backend.db import SessionDep
from backend.errors import AppError, ForbiddenError
from backend.models import Phase, Submission
from backend.submissions import service as submissions_service
from backend.submissions.schemas import SubmissionFlags
from backend.web import flash
from backend.web.auth_pages import safe_next
from backend.web.deps import CsrfChecked, PageUser, rollback_on_error
from backend.web.submission_views import SubmissionRow, submission_row
from backend.web.templating import render

router = APIRouter(include_in_schema=False)


@dataclass
class AdminRow:
    sub: Submission
    username: str
    row: SubmissionRow


@router.get("/challenges/{slug}/submissions")
def submissions_admin(
    request: Request,
    slug: str,
    session: SessionDep,
    user: PageUser,
    phase: str | None = None,
    status: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    access.require_organizer(session, user, challenge)
    phases = challenges_service.phases_of(session, challenge.id)
    found: list[tuple[Submission, str, Phase]] = []
    for p in phases:
        if phase and p.slug != phase:
            continue
        for sub, username in submissions_service.list_for_phase(session, user, challenge, p):
            if status and sub.status.value != status:
                continue
            found.append((sub, username, p))
    found.sort(key=lambda r: r[0].id, reverse=True)  # newest first: a stable order for pages
    pages = max(1, -(-len(found) // per_page))
    page = min(page, pages)
    # Status rows (a few queries each) only for the page shown.
    rows = [AdminRow(sub, username, submission_row(session, sub, p, challenge, True))
            for sub, username, p in found[(page - 1) * per_page:page * per_page]]
    query = {k: v for k, v in (("phase", phase), ("status", status)) if v}
    return render(
        request,
        "manage/submissions.html",
        {"challenge": challenge, "phases": phases, "rows": rows, "phase_filter": phase or "",
         "status_filter": status or "", "page": page, "pages": pages, "total": len(found),
         "page_query": urlencode({**query, "per_page": per_page}),
         "next_url": str(request.url.path) + (f"?{request.url.query}" if request.url.query
                                               else "")},
        user=user,
    )


def _back(next_url: str, message: str, kind: flash.Kind = "ok") -> Response:
    response = RedirectResponse(safe_next(next_url), status_code=303)
    flash.add(response, message, kind)
    return response


@router.post("/submissions/{submission_id}/cancel", dependencies=[CsrfChecked])
def cancel(submission_id: int, session: SessionDep, user: PageUser,
           next: Annotated[str, Form()] = "/manage") -> Response:
    try:
        with rollback_on_error(session):
            submissions_service.cancel(session, user, submission_id)
    except AppError as err:
        if isinstance(err, ForbiddenError):
            raise
        return _back(next, err.message, "error")
    return _back(next, f"Submission #{submission_id} cancelled.")


@router.post("/submissions/{submission_id}/reevaluate", dependencies=[CsrfChecked])
def reevaluate(submission_id: int, session: SessionDep, user: PageUser,
               next: Annotated[str, Form()] = "/manage") -> Response:
    try:
        with rollback_on_error(session):
            submissions_service.reevaluate(session, user, submission_id)
    except AppError as err:
        if isinstance(err, ForbiddenError):
            raise
        return _back(next, err.message, "error")
    return _back(next, f"Submission #{submission_id} is queued for re-evaluation.")


def _flag(raw: str | None) -> bool | None:
    return None if raw is None or raw == "" else raw in ("true", "on", "1")


@router.post("/submissions/{submission_id}/flags", dependencies=[CsrfChecked])
def set_flags(
    submission_id: int,
    session: SessionDep,
    user: PageUser,
    next: Annotated[str, Form()] = "/manage",
    is_hidden: Annotated[str | None, Form()] = None,
    is_disqualified: Annotated[str | None, Form()] = None,
    is_baseline: Annotated[str | None, Form()] = None,
) -> Response:
    flags = SubmissionFlags(is_hidden=_flag(is_hidden), is_disqualified=_flag(is_disqualified),
                            is_baseline=_flag(is_baseline))
    sub = submissions_service.set_flags(session, user, submission_id, flags)
    words = []
    if flags.is_hidden is not None:
        words.append("hidden" if sub.is_hidden else "visible")
    if flags.is_disqualified is not None:
        words.append("disqualified" if sub.is_disqualified else "qualified")
    if flags.is_baseline is not None:
        words.append("a baseline" if sub.is_baseline else "not a baseline")
    return _back(next, f"Submission #{submission_id} is now {' and '.join(words) or 'unchanged'}.")


def _results(session: SessionDep, user: PageUser, submission_id: int) -> tuple[
    list[str], list[dict[str, object]], dict[str, object]
]:
    sub, phase, view = submissions_service.open_submission(session, user, submission_id)
    if not view.organizer:
        raise ForbiddenError("Only the challenge's organisers may download full results.")
    rows: list[dict[str, object]] = [
        {"case": c.name, "status": c.run.status.value, "exit_code": c.run.exit_code,
         "duration_s": c.run.duration_s, "error": c.run.error_message, **(c.metrics or {})}
        for c in submissions_service.case_records(session, sub, view)
    ]
    keys = sorted({k for r in rows for k in r} - {"case", "status", "exit_code", "duration_s",
                                                  "error"})
    agg = submissions_service.scores(session, sub, view)
    summary: dict[str, object] = {
        "submission_id": sub.id, "phase": phase.slug, "status": sub.status.value,
        "aggregate": agg.metrics if agg else None,
        "statistics": agg.statistics if agg else None,
    }
    return ["case", "status", "exit_code", "duration_s", "error", *keys], rows, summary


@router.get("/submissions/{submission_id}/results.csv")
def results_csv(submission_id: int, session: SessionDep, user: PageUser) -> Response:
    header, rows, _ = _results(session, user, submission_id)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in header})
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="submission-{submission_id}.csv"'})


@router.get("/submissions/{submission_id}/results.json")
def results_json(submission_id: int, session: SessionDep, user: PageUser) -> Response:
    _, rows, summary = _results(session, user, submission_id)
    body = json.dumps({**summary, "cases": rows}, indent=2, default=str)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="submission-{submission_id}.json"'})
