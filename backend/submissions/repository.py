"""All SQL of submissions, case runs and results (the workflow's rules are in pipeline.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from backend.errors import NotFoundError
from backend.models import (
    ACTIVE_STATUSES,
    COUNTED_STATUSES,
    AggregateResult,
    AlgorithmImage,
    ApiToken,
    Case,
    CaseRun,
    CaseRunStatus,
    Challenge,
    ChallengeMember,
    LeaderboardSnapshot,
    Phase,
    Result,
    Submission,
    SubmissionStatus,
    User,
    utcnow,
)

T = TypeVar("T", Submission, CaseRun)


def lock_user(session: Session, user_id: int) -> None:
    """Serialises one user's submission attempts (limits stay exact under concurrency)."""
    session.execute(select(User.id).where(User.id == user_id).with_for_update())


def by_idempotency_key(session: Session, user_id: int, key: str) -> Submission | None:
    return session.scalars(select(Submission).where(
        Submission.user_id == user_id, Submission.idempotency_key == key)).first()


def active_submission(session: Session, phase_id: int, user_id: int) -> Submission | None:
    return session.scalars(
        select(Submission).where(
            Submission.phase_id == phase_id,
            Submission.user_id == user_id,
            Submission.status.in_(ACTIVE_STATUSES),
        )
    ).first()


def counted_since(
    session: Session, phase_id: int, user_id: int, since: datetime | None
) -> list[datetime]:
    stmt = select(Submission.created_at).where(
        Submission.phase_id == phase_id,
        Submission.user_id == user_id,
        Submission.status.in_(COUNTED_STATUSES),
    )
    if since is not None:
        stmt = stmt.where(Submission.created_at > since)
    return list(session.scalars(stmt.order_by(Submission.created_at)).all())


def case_count(session: Session, dataset_version_id: int) -> int:
    stmt = select(func.count(Case.id)).where(Case.dataset_version_id == dataset_version_id)
    return int(session.scalar(stmt) or 0)


def of_phase(
    session: Session, phase_id: int, user_id: int | None, offset: int = 0,
    limit: int | None = None,
) -> Sequence[tuple[Submission, str]]:
    stmt = (
        select(Submission, User.username)
        .join(User, User.id == Submission.user_id)
        .where(Submission.phase_id == phase_id)
        .order_by(Submission.id.desc())
    )
    if user_id is not None:
        stmt = stmt.where(Submission.user_id == user_id)
    stmt = stmt.offset(offset).limit(limit)
    return [(s, u) for s, u in session.execute(stmt).all()]


def aggregate(session: Session, submission_id: int) -> AggregateResult | None:
    return session.scalars(
        select(AggregateResult).where(AggregateResult.submission_id == submission_id)
    ).one_or_none()


def case_runs(session: Session, submission_id: int, offset: int = 0,
              limit: int | None = None) -> Sequence[tuple[CaseRun, Case]]:
    """(run, its case) by case name, in one query."""
    rows = session.execute(
        select(CaseRun, Case)
        .join(Case, Case.id == CaseRun.case_id)
        .where(CaseRun.submission_id == submission_id)
        .order_by(Case.name, CaseRun.id)
        .offset(offset).limit(limit)
    ).all()
    return [(r, c) for r, c in rows]


def case_metrics(session: Session, submission_id: int) -> dict[int, dict[str, object]]:
    rows = session.scalars(select(Result).where(Result.submission_id == submission_id)).all()
    return {r.case_id: r.metrics for r in rows}


def clear_evaluation(session: Session, submission_id: int) -> None:
    for model in (Result, AggregateResult, CaseRun):
        session.execute(delete(model).where(model.submission_id == submission_id))


# ---------------------------------------------------------------- the workflow's rows


def _locked(session: Session, model: type[T], row_id: int, what: str) -> T:
    """The row with ``SELECT … FOR UPDATE`` (held until the caller commits), fresh from the DB."""
    row = session.scalars(
        select(model).where(model.id == row_id)
        .with_for_update().execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"{what} {row_id} does not exist.")
    return row


def lock_submission(session: Session, submission_id: int) -> Submission:
    return _locked(session, Submission, submission_id, "Submission")


def lock_case_run(session: Session, case_run_id: int) -> CaseRun:
    return _locked(session, CaseRun, case_run_id, "Case run")


def _with_context_query() -> Any:
    owner = aliased(User)
    return (
        select(Submission, Phase, Challenge, owner, AlgorithmImage)
        .join(Phase, Phase.id == Submission.phase_id)
        .join(Challenge, Challenge.id == Phase.challenge_id)
        .join(owner, owner.id == Submission.user_id)
        .outerjoin(AlgorithmImage, AlgorithmImage.id == Submission.image_id)
        .where(Submission.id == bindparam("submission"))
    )


_WITH_CONTEXT = _with_context_query()  # built once (~0.5 ms of Python a page otherwise)


def with_context(session: Session, submission_id: int) -> tuple[
        Submission, Phase, Challenge, User, AlgorithmImage | None] | None:
    """The submission with its phase, challenge, owner and image, in one query (a page shows
    them all; four queries were one each)."""
    row = session.execute(_WITH_CONTEXT, {"submission": submission_id}).first()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


def submission_status(session: Session, submission_id: int) -> SubmissionStatus | None:
    return session.scalar(select(Submission.status).where(Submission.id == submission_id))


def cases_of_version(session: Session, dataset_version_id: int) -> Sequence[Case]:
    return session.scalars(
        select(Case).where(Case.dataset_version_id == dataset_version_id).order_by(Case.name)
    ).all()


def run_input_kinds(session: Session, run_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Each case run's (region, input modality): what one container run must share."""
    rows = session.execute(
        select(CaseRun.id, Case.region, Case.modality)
        .join(Case, Case.id == CaseRun.case_id)
        .where(CaseRun.id.in_(list(run_ids)))
    ).all()
    return {rid: (region, modality.value) for rid, region, modality in rows}


def runs_of(session: Session, submission_id: int) -> Sequence[CaseRun]:
    return session.scalars(
        select(CaseRun).where(CaseRun.submission_id == submission_id).order_by(CaseRun.id)
    ).all()


def run_status_counts(session: Session, submission_id: int) -> dict[CaseRunStatus, int]:
    rows = session.execute(
        select(CaseRun.status, func.count()).where(CaseRun.submission_id == submission_id)
        .group_by(CaseRun.status)
    ).all()
    return {status: int(n) for status, n in rows}


def _scored_runs(submission_id: int) -> Any:
    return (
        select(Result.metrics, Case.name)
        .join(CaseRun, (CaseRun.submission_id == Result.submission_id)
              & (CaseRun.case_id == Result.case_id))
        .join(Case, Case.id == Result.case_id)
        .where(Result.submission_id == submission_id, CaseRun.status == CaseRunStatus.SUCCEEDED)
    )


def scored_count(session: Session, submission_id: int) -> int:
    """Succeeded case runs that have their metrics."""
    sub = _scored_runs(submission_id).subquery()
    return int(session.scalar(select(func.count()).select_from(sub)) or 0)


def scored_metrics(session: Session, submission_id: int) -> list[tuple[str, dict[str, Any]]]:
    """(case name, metrics) of the succeeded, scored case runs, in case-name order (a fixed
    order: the same per-case values always aggregate to the same bits)."""
    rows = session.execute(_scored_runs(submission_id).order_by(Case.name)).all()
    return [(name, metrics) for metrics, name in rows]


def first_case_error(session: Session, submission_id: int) -> str | None:
    return session.scalar(
        select(CaseRun.error_message)
        .where(CaseRun.submission_id == submission_id, CaseRun.error_message != "")
        .order_by(CaseRun.id).limit(1)
    )


def scored_case_ids(session: Session, submission_id: int) -> set[int]:
    return set(session.scalars(select(Result.case_id).where(Result.submission_id == submission_id)))


def open_case_run_ids(session: Session, submission_id: int) -> list[int]:
    return list(session.scalars(
        select(CaseRun.id).where(
            CaseRun.submission_id == submission_id,
            CaseRun.status.in_([CaseRunStatus.PENDING, CaseRunStatus.RUNNING]),
        ).order_by(CaseRun.id)
    ))


def running_case_runs(session: Session) -> Sequence[tuple[int, int, datetime | None, Phase]]:
    """(run id, submission id, started at, phase) of every RUNNING run of a RUNNING submission."""
    rows = session.execute(
        select(CaseRun.id, CaseRun.submission_id, CaseRun.started_at, Phase)
        .join(Submission, Submission.id == CaseRun.submission_id)
        .join(Phase, Phase.id == Submission.phase_id)
        .where(CaseRun.status == CaseRunStatus.RUNNING,
               Submission.status == SubmissionStatus.RUNNING)
        .order_by(CaseRun.id)
    ).all()
    return [(r, s, t, p) for r, s, t, p in rows]


def unmoved_submissions(session: Session, before: datetime) -> Sequence[Submission]:
    """Active submissions not updated since ``before``."""
    return session.scalars(
        select(Submission).where(
            Submission.status.in_(ACTIVE_STATUSES), Submission.updated_at < before
        ).order_by(Submission.id)
    ).all()


def _upsert(session: Session, table: Any, values: dict[str, Any], keys: list[str],
            update: Iterable[str]) -> None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = pg_insert(table).values(**values)
    else:
        stmt = sqlite_insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={k: stmt.excluded[k] for k in update}
    )
    session.execute(stmt)


def upsert_result(
    session: Session, submission_id: int, case_id: int, metrics: dict[str, Any]
) -> None:
    """Insert or overwrite the metrics of one case (a retried step never duplicates)."""
    now = utcnow()
    _upsert(session, Result.__table__,
            {"submission_id": submission_id, "case_id": case_id, "metrics": metrics,
             "created_at": now, "updated_at": now},
            ["submission_id", "case_id"], ["metrics", "updated_at"])


def upsert_aggregate(
    session: Session, submission_id: int, metrics: dict[str, Any], statistics: dict[str, Any],
    cases_scored: int,
) -> None:
    now = utcnow()
    _upsert(session, AggregateResult.__table__,
            {"submission_id": submission_id, "metrics": metrics, "statistics": statistics,
             "cases_scored": cases_scored, "created_at": now, "updated_at": now},
            ["submission_id"], ["metrics", "statistics", "cases_scored", "updated_at"])


def phase_case_metrics(
    session: Session, phase_id: int, statuses: Iterable[SubmissionStatus]
) -> dict[int, dict[str, dict[str, Any]]]:
    """Per submission of the phase in ``statuses`` (hidden ones left out): case name -> the
    metrics of its scored cases."""
    rows = session.execute(
        select(Result.submission_id, Case.name, Result.metrics)
        .join(Submission, Submission.id == Result.submission_id)
        .join(Case, Case.id == Result.case_id)
        .where(Submission.phase_id == phase_id, Submission.status.in_(list(statuses)),
               Submission.is_hidden.is_(False))
        .order_by(Result.submission_id, Case.name)
    ).all()
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for sub_id, name, metrics in rows:
        out.setdefault(sub_id, {})[name] = metrics
    return out


def incomplete_aggregates(session: Session, phase_id: int, cases_total: int) -> list[int]:
    """Succeeded submissions of the phase whose aggregate filled some case (scored fewer)."""
    return list(session.scalars(
        select(AggregateResult.submission_id)
        .join(Submission, Submission.id == AggregateResult.submission_id)
        .where(Submission.phase_id == phase_id, Submission.status == SubmissionStatus.SUCCEEDED,
               AggregateResult.cases_scored < cases_total)
        .order_by(AggregateResult.submission_id)
    ))



def _view_state_query(member: Any = None, *viewer: Any) -> Any:
    """The view state's statement (see ``view_state``). ``member``: the viewer's id for the
    roles' subqueries (default: the ``viewer`` parameter); ``viewer``: the columns of a
    viewer row this statement reads as well, for ``viewer_state_sql``."""
    def changes(model: Any, where: Any) -> list[Any]:
        return [select(func.count()).select_from(model).where(where).scalar_subquery(),
                select(func.max(model.updated_at)).where(where).scalar_subquery()]

    owner = User.__table__.alias("owner")
    member = bindparam("viewer") if member is None else member
    return (
        select(
            Submission.updated_at, Submission.user_id, Phase.updated_at,
            Phase.leaderboard_version, Challenge.updated_at, owner.c.updated_at,
            AlgorithmImage.updated_at, LeaderboardSnapshot.version, LeaderboardSnapshot.etag,
            *changes(CaseRun, CaseRun.submission_id == Submission.id),
            *changes(Result, Result.submission_id == Submission.id),
            *changes(AggregateResult, AggregateResult.submission_id == Submission.id),
            *changes(ChallengeMember, ChallengeMember.user_id == member),
            *viewer,
        )
        .join(Phase, Phase.id == Submission.phase_id)
        .join(Challenge, Challenge.id == Phase.challenge_id)
        .join(owner, owner.c.id == Submission.user_id)
        .outerjoin(AlgorithmImage, AlgorithmImage.id == Submission.image_id)
        .outerjoin(LeaderboardSnapshot, LeaderboardSnapshot.phase_id == Phase.id)
        .where(Submission.id == bindparam("submission"))
    )


# Built once: building this statement per call cost ~1 ms of Python (as much as running it).
_VIEW_STATE = _view_state_query()
# The state's width: the columns a viewer row adds come after it.
STATE_WIDTH = len(_VIEW_STATE.selected_columns)
# What ``viewer_state_sql`` reads of the viewer, after the state: the ``Viewer`` first.
VIEWER_COLUMNS = ("id", "is_admin", "updated_at", "is_active", "password_hash")
TOKEN_COLUMNS = ("revoked_at", "expires_at", "last_used_at")


def viewer_state_sql(by_token: bool) -> str:
    """One statement, in psycopg's parameter style, for the view state *and* the viewer it
    is for: the viewer is found by an API token's digest (``%(digest)s``) or by user id
    (``%(user_id)s``); a row is the state (``STATE_WIDTH`` columns, as ``view_state``'s),
    then ``VIEWER_COLUMNS``, then for a token ``TOKEN_COLUMNS``. No row: no such submission
    or viewer. One round trip for ``backend.kept_lane`` where two were (~0.5 CPU ms)."""
    from sqlalchemy.dialects.postgresql import psycopg

    cols = [getattr(User, c) for c in VIEWER_COLUMNS]
    if by_token:
        who = (select(*cols, *(getattr(ApiToken, c) for c in TOKEN_COLUMNS))
               .join(ApiToken, ApiToken.user_id == User.id)
               .where(ApiToken.token_hash == bindparam("digest")))
    else:
        who = select(*cols).where(User.id == bindparam("user_id"))
    viewer = who.subquery("viewer")
    names = VIEWER_COLUMNS + (TOKEN_COLUMNS if by_token else ())
    stmt = _view_state_query(viewer.c.id, *(viewer.c[n] for n in names))
    return str(stmt.compile(dialect=psycopg.dialect()))  # type: ignore[no-untyped-call]


class Viewer(NamedTuple):
    """The viewer's part of a view state."""

    id: int
    is_admin: bool
    updated_at: datetime  # of the user's row


def view_state(session: Session, submission_id: int, viewer: Viewer) -> tuple[Any, ...] | None:
    """Everything a viewer's page of a submission is built from, as one row of one indexed
    query: the submission, its phase (settings, leaderboard version), challenge, owner and
    image rows' last changes, its case runs', per-case results' and aggregate's (count and
    latest change, so a deletion shows too), the stored leaderboard's ETag and the viewer's
    challenge roles — followed by the viewer's own row (``Viewer``). None: no such
    submission. An equal state means an equal page (a kept page is served again), see
    ``backend.kept``."""
    row = session.execute(_VIEW_STATE, {"submission": submission_id, "viewer": viewer.id}
                          ).first()
    return None if row is None else with_viewer(tuple(row), viewer)


def with_viewer(state: tuple[Any, ...], viewer: Viewer) -> tuple[Any, ...]:
    """A view state: the state's columns, then the viewer's part."""
    return (*state, *viewer)
