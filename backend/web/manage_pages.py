"""Organiser pages: challenges, phases (every field, validated), members and roles, datasets,
and the actions on submissions. Plain CRUD of every table is also at /admin (sqladmin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from backend import access
from backend.challenges import service as challenges_service
from backend.challenges.schemas import ChallengeIn, ChallengePatch, MemberIn
from backend.config import settings
from backend.datasets import service as datasets_service
from backend.datasets.schemas import DatasetIn, ImportIn
from backend.db import SessionDep
from backend.errors import AppError, ForbiddenError
from backend.models import ChallengeRole, PhaseKind, RankingMethod, SubmissionSelection, User
from backend.web import flash, forms
from backend.web.auth_pages import safe_next
from backend.web.deps import CsrfChecked, PageUser, rollback_on_error
from backend.web.import_pages import recent_imports
from backend.web.import_pages import router as imports_router
from backend.web.manage_submissions import router as submissions_router
from backend.web.templating import render

router = APIRouter(prefix="/manage", include_in_schema=False)
router.include_router(submissions_router)
router.include_router(imports_router)


def _redirect(url: str, message: str | None = None, kind: flash.Kind = "ok") -> Response:
    response = RedirectResponse(url, status_code=303)
    if message:
        flash.add(response, message, kind)
    return response


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


# The form is read on the event loop (a dependency); the handlers that use it are plain
# functions, so FastAPI runs their database work in its thread pool instead of stalling every
# other request. A dataset import only queues a job (``datasets.import``) here.
FormFields = Annotated[dict[str, str], Depends(_form)]


@router.get("")
def manage_home(request: Request, session: SessionDep, user: PageUser) -> Response:
    challenges = [
        c for c in challenges_service.visible(session, user)
        if access.is_organizer(session, user, c.id)
    ]
    return render(request, "manage/home.html", {"challenges": challenges}, user=user)


# Challenges -------------------------------------------------------------------------------


@router.get("/challenges/new")
def new_challenge_page(request: Request, user: PageUser) -> Response:
    if not user.is_admin:
        raise ForbiddenError("Only site administrators may create challenges.")
    return render(request, "manage/challenge_new.html", {"form": {}, "errors": {}}, user=user)


@router.post("/challenges/new", dependencies=[CsrfChecked])
def create_challenge(
    request: Request, session: SessionDep, user: PageUser, form: FormFields
) -> Response:
    try:
        data = ChallengeIn(
            slug=form.get("slug", "").strip(),
            title=form.get("title", "").strip(),
            description=form.get("description", ""),
            is_public=form.get("is_public") == "on",
        )
        with rollback_on_error(session):
            challenge = challenges_service.create_challenge(session, user, data)
    except ValidationError as err:
        errors = {str(e["loc"][0]): _plain(e) for e in err.errors()}
        return render(request, "manage/challenge_new.html", {"form": form, "errors": errors},
                      user=user, status_code=422)
    except AppError as err:
        return render(request, "manage/challenge_new.html",
                      {"form": form, "errors": {"form": err.message}}, user=user,
                      status_code=err.status_code)
    return _redirect(f"/manage/challenges/{challenge.slug}",
                     f"Challenge {challenge.title} created.")


def _plain(error: Any) -> str:
    if error.get("type") == "string_pattern_mismatch":
        return "Use lower-case letters, digits and dashes (e.g. synthrad2025-task1)."
    return str(error.get("msg", "invalid"))


@router.get("/challenges/{slug}")
def challenge_admin(request: Request, slug: str, session: SessionDep, user: PageUser) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    access.require_organizer(session, user, challenge)
    return render(
        request,
        "manage/challenge.html",
        {
            "challenge": challenge,
            "phases": challenges_service.phases_of(session, challenge.id),
            "members": challenges_service.members(session, user, challenge),
            "roles": [r.value for r in ChallengeRole],
            "tab": "settings",
        },
        user=user,
    )


@router.post("/challenges/{slug}", dependencies=[CsrfChecked])
def update_challenge(
    request: Request, slug: str, session: SessionDep, user: PageUser, form: FormFields,
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    try:
        data = ChallengePatch(
            title=form.get("title", "").strip(),
            description=form.get("description", ""),
            is_public=form.get("is_public") == "on",
        )
    except ValidationError:
        return _redirect(f"/manage/challenges/{slug}", "The title cannot be empty.", "error")
    challenges_service.update_challenge(session, user, challenge, data)
    return _redirect(f"/manage/challenges/{slug}", "Challenge saved.")


@router.post("/challenges/{slug}/members", dependencies=[CsrfChecked])
def set_member(
    slug: str,
    session: SessionDep,
    user: PageUser,
    username: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "participant",
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    try:
        data = MemberIn(username=username.strip(), role=ChallengeRole(role))
        with rollback_on_error(session):
            _, target = challenges_service.set_member(session, user, challenge, data)
    except (ValueError, ValidationError):
        return _redirect(f"/manage/challenges/{slug}#members", "Pick a role.", "error")
    except AppError as err:
        if err.status_code == 403:
            raise
        return _redirect(f"/manage/challenges/{slug}#members", err.message, "error")
    return _redirect(f"/manage/challenges/{slug}#members", f"{target.username} is now {role}.")


# Phases -----------------------------------------------------------------------------------


def _phase_context(session: SessionDep, user: User, values: dict[str, Any],
                   errors: dict[str, str]) -> dict[str, Any]:
    datasets = []
    for ds in datasets_service.list_visible(session, user):
        for v in datasets_service.versions_of(session, ds.id):
            datasets.append({"value": f"{ds.slug}:{v.version}", "id": v.id,
                             "label": f"{ds.title} v{v.version} — {v.case_count} cases"})
    return {
        "values": values,
        "errors": errors,
        "datasets": datasets,
        "kinds": [k.value for k in PhaseKind],
        "methods": [m.value for m in RankingMethod],
        "selections": [s.value for s in SubmissionSelection],
    }


@router.get("/challenges/{slug}/phases/new")
def new_phase_page(request: Request, slug: str, session: SessionDep, user: PageUser) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    access.require_organizer(session, user, challenge)
    ctx = _phase_context(session, user, forms.phase_form_values(None), {})
    return render(request, "manage/phase.html", {"challenge": challenge, "phase": None, **ctx},
                  user=user)


@router.post("/challenges/{slug}/phases/new", dependencies=[CsrfChecked])
def create_phase(
    request: Request, slug: str, session: SessionDep, user: PageUser, form: FormFields,
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    access.require_organizer(session, user, challenge)
    try:
        phase_in = forms.phase_in(form)
        with rollback_on_error(session):
            phase = challenges_service.create_phase(session, user, challenge, phase_in)
    except (forms.FormError, AppError) as err:
        errors = err.errors if isinstance(err, forms.FormError) else {"form": err.message}
        ctx = _phase_context(session, user, _echo(form), errors)
        return render(request, "manage/phase.html", {"challenge": challenge, "phase": None, **ctx},
                      user=user, status_code=422)
    return _redirect(f"/manage/challenges/{slug}/phases/{phase.slug}",
                     f"Phase {phase.title} created.")


def _echo(form: dict[str, str]) -> dict[str, Any]:
    """Show the submitted values again after an error (checkboxes as booleans)."""
    values: dict[str, Any] = dict(form)
    for key in forms.BOOL_FIELDS:
        values[key] = form.get(key) in ("on", "true", "1")
    return values


@router.get("/challenges/{slug}/phases/{phase_slug}")
def phase_admin(
    request: Request, slug: str, phase_slug: str, session: SessionDep, user: PageUser
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    access.require_organizer(session, user, challenge)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    values = forms.phase_form_values(phase)
    ctx = _phase_context(session, user, values, {})
    ctx["values"]["dataset"] = next(
        (d["value"] for d in ctx["datasets"] if d["id"] == phase.dataset_version_id), ""
    )
    return render(request, "manage/phase.html", {"challenge": challenge, "phase": phase, **ctx},
                  user=user)


@router.post("/challenges/{slug}/phases/{phase_slug}", dependencies=[CsrfChecked])
def update_phase(
    request: Request, slug: str, phase_slug: str, session: SessionDep, user: PageUser,
    form: FormFields,
) -> Response:
    challenge = access.challenge_by_slug(session, slug, user)
    access.require_organizer(session, user, challenge)
    phase = access.phase_by_slug(session, challenge, phase_slug)
    try:
        settings_in = forms.phase_settings(form)
        with rollback_on_error(session):
            challenges_service.update_phase(session, user, challenge, phase, settings_in)
    except (forms.FormError, AppError) as err:
        session.refresh(phase)
        errors = err.errors if isinstance(err, forms.FormError) else {"form": err.message}
        ctx = _phase_context(session, user, _echo(form), errors)
        return render(request, "manage/phase.html",
                      {"challenge": challenge, "phase": phase, **ctx},
                      user=user, status_code=422)
    return _redirect(f"/manage/challenges/{slug}/phases/{phase.slug}", "Phase saved.")


# Datasets ---------------------------------------------------------------------------------


@router.get("/datasets")
def datasets_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    rows = []
    for ds in datasets_service.list_visible(session, user):
        rows.append({"dataset": ds, "versions": datasets_service.versions_of(session, ds.id),
                     "imports": recent_imports(session, ds.slug, ds.id)})
    organised = [
        c for c in challenges_service.visible(session, user)
        if access.is_organizer(session, user, c.id)
    ]
    return render(request, "manage/datasets.html",
                  {"rows": rows, "challenges": organised, "form": {},
                   "max_archive_bytes": settings.max_dataset_archive_bytes}, user=user)


@router.post("/datasets", dependencies=[CsrfChecked])
def create_dataset(
    request: Request, session: SessionDep, user: PageUser, form: FormFields
) -> Response:
    try:
        data = DatasetIn(
            slug=form.get("slug", "").strip(),
            title=form.get("title", "").strip(),
            description=form.get("description", ""),
            challenge=form.get("challenge") or None,
        )
        with rollback_on_error(session):
            ds = datasets_service.create(session, user, data)
    except ValidationError as err:
        return _redirect("/manage/datasets", "; ".join(
            f"{e['loc'][0]}: {_plain(e)}" for e in err.errors()), "error")
    except AppError as err:
        return _redirect("/manage/datasets", err.message, "error")
    return _redirect("/manage/datasets", f"Dataset {ds.title} created; import a version next.")


@router.post("/datasets/{ds_slug}/import", dependencies=[CsrfChecked])
def import_dataset(
    request: Request, ds_slug: str, session: SessionDep, user: PageUser, form: FormFields,
) -> Response:
    dataset = datasets_service.get(session, user, ds_slug)
    try:
        data = ImportIn.model_validate({k: v for k, v in form.items()
                                        if k != "csrf_token" and v != ""})
        with rollback_on_error(session):
            job = datasets_service.start_import(session, user, dataset, data)
    except ValidationError as err:
        return _redirect("/manage/datasets", "; ".join(
            f"{e['loc'][0]}: {_plain(e)}" for e in err.errors()), "error")
    except AppError as err:
        return _redirect("/manage/datasets", err.message, "error")
    return _redirect(safe_next(form.get("next") or "/manage/datasets"),
                     f"Import #{job.id} of {dataset.slug} queued; its progress shows below.")
