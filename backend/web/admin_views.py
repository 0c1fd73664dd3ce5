"""sqladmin at /admin: plain CRUD of every table for site administrators (users and roles,
tokens, challenges, datasets…). Actions with rules (phase validation, cancel, re-evaluate,
flags) live on the custom /manage pages, so those tables are read-only here."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

from fastapi import FastAPI
from sqladmin import Admin, ModelView
from sqladmin.authentication import AuthenticationBackend
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backend import db
from backend.config import settings
from backend.db import session_scope
from backend.models import (
    AggregateResult,
    AlgorithmImage,
    ApiToken,
    Case,
    CaseRun,
    Challenge,
    ChallengeMember,
    Dataset,
    DatasetVersion,
    Phase,
    Result,
    Submission,
    User,
)
from backend.security import read_session_cookie
from backend.web.templating import TEMPLATES_DIR


class SiteAdminAuth(AuthenticationBackend):
    """Reuses the site's session cookie: only active site administrators get in. sqladmin's
    forms have no CSRF token, so writes must come from this site (Origin/Referer check on top
    of the SameSite=Lax session cookie)."""

    async def login(self, request: Request) -> bool:
        return False

    async def logout(self, request: Request) -> Response:
        return RedirectResponse("/", status_code=303)

    async def authenticate(self, request: Request) -> Response | bool:
        user_id = _admin_id(request)
        if user_id is None:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            return Response("Cross-site request refused.", status_code=403)
        return True

    async def get_user_id(self, request: Request) -> Any:
        return _admin_id(request)


def _admin_id(request: Request) -> int | None:
    cookie = request.cookies.get(settings.session_cookie_name)
    parsed = read_session_cookie(cookie) if cookie else None
    if parsed is None:
        return None
    with session_scope() as session:
        user = session.get(User, parsed[0])
        if (user is None or not user.is_active or not user.is_admin
                or user.password_hash[-16:] != parsed[1]):
            return None
        return user.id


def _same_origin(request: Request) -> bool:
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if not source:
        return False
    host = request.headers.get("host", "")
    return urlsplit(source).netloc == host


class UserAdmin(ModelView, model=User):
    icon = "fa-solid fa-user"
    column_list: ClassVar[Any] = [User.id, User.username, User.email, User.is_admin,
                                  User.is_active, User.created_at]
    column_searchable_list: ClassVar[Any] = [User.username, User.email]
    column_sortable_list: ClassVar[Any] = [User.id, User.username, User.created_at]
    form_excluded_columns: ClassVar[Any] = [User.password_hash, User.created_at,
                                            User.updated_at]
    column_details_exclude_list: ClassVar[Any] = [User.password_hash]
    can_create = False  # accounts are made by registering (passwords are hashed there)


class MemberAdmin(ModelView, model=ChallengeMember):
    name = "Challenge role"
    name_plural = "Challenge roles"
    icon = "fa-solid fa-user-tag"
    column_list: ClassVar[Any] = [ChallengeMember.id, ChallengeMember.challenge_id,
                                  ChallengeMember.user_id, ChallengeMember.role]


class TokenAdmin(ModelView, model=ApiToken):
    icon = "fa-solid fa-key"
    column_list: ClassVar[Any] = [ApiToken.id, ApiToken.user_id, ApiToken.name, ApiToken.prefix,
                                  ApiToken.last_used_at, ApiToken.expires_at,
                                  ApiToken.revoked_at]
    column_details_exclude_list: ClassVar[Any] = [ApiToken.token_hash]
    can_create = False
    can_edit = False


class ChallengeAdmin(ModelView, model=Challenge):
    icon = "fa-solid fa-trophy"
    column_list: ClassVar[Any] = [Challenge.id, Challenge.slug, Challenge.title,
                                  Challenge.is_public, Challenge.created_at]


class _ReadOnly(ModelView):
    can_create = False
    can_edit = False
    can_delete = False


class PhaseAdmin(_ReadOnly, model=Phase):
    icon = "fa-solid fa-flag"
    column_list: ClassVar[Any] = [Phase.id, Phase.challenge_id, Phase.slug, Phase.title,
                                  Phase.kind, Phase.is_open, Phase.opens_at, Phase.closes_at]


class DatasetAdmin(ModelView, model=Dataset):
    icon = "fa-solid fa-database"
    column_list: ClassVar[Any] = [Dataset.id, Dataset.slug, Dataset.title, Dataset.challenge_id]
    can_delete = False


class DatasetVersionAdmin(_ReadOnly, model=DatasetVersion):
    column_list: ClassVar[Any] = [DatasetVersion.id, DatasetVersion.dataset_id,
                                  DatasetVersion.version, DatasetVersion.case_count,
                                  DatasetVersion.source]


class CaseAdmin(_ReadOnly, model=Case):
    column_list: ClassVar[Any] = [Case.id, Case.dataset_version_id, Case.name, Case.modality,
                                  Case.region]


class ImageAdmin(_ReadOnly, model=AlgorithmImage):
    column_list: ClassVar[Any] = [AlgorithmImage.id, AlgorithmImage.owner_id,
                                  AlgorithmImage.name, AlgorithmImage.status,
                                  AlgorithmImage.size_bytes, AlgorithmImage.created_at]


class SubmissionAdmin(_ReadOnly, model=Submission):
    icon = "fa-solid fa-paper-plane"
    column_list: ClassVar[Any] = [Submission.id, Submission.phase_id, Submission.user_id,
                                  Submission.status, Submission.is_baseline,
                                  Submission.is_hidden, Submission.is_disqualified,
                                  Submission.created_at]


class CaseRunAdmin(_ReadOnly, model=CaseRun):
    column_list: ClassVar[Any] = [CaseRun.id, CaseRun.submission_id, CaseRun.case_id,
                                  CaseRun.status, CaseRun.exit_code, CaseRun.duration_s]


class ResultAdmin(_ReadOnly, model=Result):
    column_list: ClassVar[Any] = [Result.id, Result.submission_id, Result.case_id]


class AggregateAdmin(_ReadOnly, model=AggregateResult):
    column_list: ClassVar[Any] = [AggregateResult.id, AggregateResult.submission_id,
                                  AggregateResult.cases_scored]


VIEWS: list[type[ModelView]] = [
    UserAdmin, MemberAdmin, TokenAdmin, ChallengeAdmin, PhaseAdmin, DatasetAdmin,
    DatasetVersionAdmin, CaseAdmin, ImageAdmin, SubmissionAdmin, CaseRunAdmin, ResultAdmin,
    AggregateAdmin,
]


class _Sessions(sessionmaker[Session]):
    """The app's sessions for sqladmin, honouring ``backend.db.session_factory_override``
    (tests join every session to one rolled-back transaction)."""

    def __call__(self, **local_kw: Any) -> Session:
        if db.session_factory_override is not None:
            return db.session_factory_override()
        return super().__call__(**local_kw)


def mount_admin(app: FastAPI) -> Admin:
    admin = Admin(
        app,
        session_maker=_Sessions(bind=db.get_engine(), expire_on_commit=False),
        title="SynthArena admin",
        templates_dir=str(TEMPLATES_DIR / "admin"),  # our landing page (sqladmin's is empty)
        authentication_backend=SiteAdminAuth(secret_key=settings.secret_key),
    )
    for view in VIEWS:
        admin.add_view(view)
    return admin
