from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from backend import access
from backend.challenges import repository as repo
from backend.challenges.schemas import (
    ChallengeIn,
    ChallengePatch,
    MemberIn,
    PhaseIn,
    PhaseSettings,
)
from backend.config import settings
from backend.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnprocessableError,
)
from backend.leaderboards import service as leaderboards
from backend.models import (
    CasePolicy,
    Challenge,
    ChallengeMember,
    ChallengeRole,
    Phase,
    PhaseKind,
    User,
    utcnow,
)
from backend.models.challenges import DEFAULT_SUBMISSION_PERIOD_S
from evaluator.metrics import METRICS, DirectionError, resolve_direction, spec_for
from evaluator.profiles import PROFILES


def create_challenge(session: Session, user: User, data: ChallengeIn) -> Challenge:
    if not user.is_admin:
        raise ForbiddenError("Only site administrators may create challenges.")
    if repo.slug_taken(session, data.slug):
        raise ConflictError(f"A challenge '{data.slug}' already exists; pick another slug.")
    challenge = Challenge(**data.model_dump(), created_by_id=user.id)
    session.add(challenge)
    session.flush()
    repo.add_member(session, challenge.id, user.id, ChallengeRole.ORGANIZER)
    session.flush()
    return challenge


def update_challenge(
    session: Session, user: User, challenge: Challenge, data: ChallengePatch
) -> Challenge:
    access.require_organizer(session, user, challenge)
    for key, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(challenge, key, value)
    session.flush()
    return challenge


def register(session: Session, user: User, challenge: Challenge) -> ChallengeMember:
    existing = repo.membership(session, challenge.id, user.id)
    if existing is not None:
        return existing
    if not challenge.is_public:
        raise ForbiddenError("This challenge is invite-only; ask its organisers to add you.")
    member = ChallengeMember(
        challenge_id=challenge.id, user_id=user.id, role=ChallengeRole.PARTICIPANT
    )
    session.add(member)
    session.flush()
    return member


def set_member(
    session: Session, user: User, challenge: Challenge, data: MemberIn
) -> tuple[ChallengeMember, User]:
    access.require_organizer(session, user, challenge)
    from backend.auth.repository import user_by_username

    target = user_by_username(session, data.username)
    if target is None:
        raise NotFoundError(f"There is no user '{data.username}'.")
    member = repo.membership(session, challenge.id, target.id)
    if member is None:
        member = ChallengeMember(challenge_id=challenge.id, user_id=target.id, role=data.role)
        session.add(member)
    else:
        member.role = data.role
    session.flush()
    return member, target


def members(
    session: Session, user: User, challenge: Challenge
) -> Sequence[tuple[ChallengeMember, User]]:
    access.require_organizer(session, user, challenge)
    return repo.members(session, challenge.id)


def accepting_reason(phase: Phase, now: datetime | None = None) -> str | None:
    """Why the phase does not accept submissions now, or None when it does."""
    now = now or utcnow()
    if not phase.is_open:
        return f"Phase '{phase.slug}' is closed for submissions."
    if phase.opens_at is not None and now < phase.opens_at:
        return f"Phase '{phase.slug}' opens at {phase.opens_at.isoformat()}."
    if phase.closes_at is not None and now >= phase.closes_at:
        return f"Phase '{phase.slug}' closed at {phase.closes_at.isoformat()}."
    if phase.dataset_version_id is None:
        return f"Phase '{phase.slug}' has no dataset yet; the organisers must attach one."
    return scoring_unavailable(phase)


def scoring_unavailable(phase: Phase) -> str | None:
    """Why this phase's scoring profile cannot score here (its segmenter's weights are
    missing), or None when it can."""
    profile = PROFILES.get(phase.metric_profile)
    if profile is None or not profile.needs_totalsegmentator:
        return None
    from evaluator.segmentation import weights_problem

    problem = weights_problem(settings.totalseg_weights_dir)
    if problem is None:
        return None
    return (f"Phase '{phase.slug}' cannot accept submissions: its scoring profile "
            f"'{phase.metric_profile}' computes SynthRAD2025's geometry metrics with "
            f"TotalSegmentator, and {problem[0].lower()}{problem[1:]} Or choose the profile "
            f"'{phase.metric_profile}-phantom' (HU-threshold geometry) for phantom data.")


def _apply(session: Session, phase: Phase, data: PhaseSettings) -> None:
    values = data.model_dump(exclude_unset=True)
    dataset_slug = values.pop("dataset", None)
    version = values.pop("dataset_version", None)
    if dataset_slug is not None:
        found = repo.dataset_version(session, dataset_slug, version)
        if found is None:
            raise NotFoundError(f"There is no dataset '{dataset_slug}'.")
        dataset, dv = found
        if dv is None:
            raise NotFoundError(
                f"Dataset '{dataset_slug}' has no version {version or ''}; import one first."
            )
        if dataset.challenge_id not in (None, phase.challenge_id):
            raise ForbiddenError(f"Dataset '{dataset_slug}' belongs to another challenge.")
        phase.dataset_version_id = dv.id
    if "submission_period_s" in values and values["submission_period_s"] == 0:
        values["submission_period_s"] = None
    for key, value in values.items():
        if value is None and key not in {"opens_at", "closes_at", "submission_period_s"}:
            continue
        setattr(phase, key, value)
    if "extra_columns" in values and data.extra_columns is not None:
        phase.extra_columns = [c.model_dump() for c in data.extra_columns]
    _validate(phase)
    _resolve_directions(phase, values.get("primary_higher_is_better"))


def _resolve_directions(phase: Phase, declared_primary: bool | None) -> None:
    """Every ranked column takes its direction from the evaluator's registry; a declared one
    that contradicts it is refused rather than silently inverting the metric."""
    try:
        phase.primary_higher_is_better = resolve_direction(phase.primary_metric,
                                                           declared_primary)
        phase.extra_columns = [
            {**c, "higher_is_better": resolve_direction(c["metric"], c.get("higher_is_better"))}
            for c in phase.extra_columns
        ]
    except DirectionError as exc:
        raise UnprocessableError(str(exc)) from exc


def _validate(phase: Phase) -> None:
    if phase.opens_at and phase.closes_at and phase.closes_at <= phase.opens_at:
        raise BadRequestError("closes_at must be after opens_at.")
    if phase.metric_profile not in PROFILES:
        raise BadRequestError(
            f"Unknown scoring profile '{phase.metric_profile}'. Known profiles: "
            + "; ".join(f"{p.name} ({p.description})" for p in PROFILES.values()) + ".")
    if phase.is_open and (reason := scoring_unavailable(phase)) is not None:
        raise BadRequestError(reason.replace("cannot accept submissions", "cannot be opened"))
    if phase.case_time_limit_s > settings.max_case_time_limit_s:
        raise BadRequestError(f"case_time_limit_s is at most {settings.max_case_time_limit_s}.")
    if phase.memory_mb > settings.max_memory_mb:
        raise BadRequestError(f"memory_mb is at most {settings.max_memory_mb}.")
    if phase.cpus > settings.max_cpus:
        raise BadRequestError(f"cpus is at most {settings.max_cpus}.")
    columns = [phase.primary_metric, *(c["metric"] for c in phase.extra_columns)]
    for name in columns:
        if spec_for(name) is None:
            raise BadRequestError(
                f"Unknown metric '{name}'. Known metrics: {', '.join(sorted(METRICS))} "
                "(and dice_<structure>, hd95_<structure>)."
            )
    stray = sorted(set(phase.case_penalties or {}) - set(columns))
    if stray:
        raise BadRequestError(
            f"case_penalties names {', '.join(stray)}, not a column of this phase's "
            f"leaderboard ({', '.join(columns)}).")


def create_phase(session: Session, user: User, challenge: Challenge, data: PhaseIn) -> Phase:
    access.require_organizer(session, user, challenge)
    if repo.phase_slug_taken(session, challenge.id, data.slug):
        raise ConflictError(f"Challenge '{challenge.slug}' already has a phase '{data.slug}'.")
    phase = Phase(challenge_id=challenge.id, slug=data.slug, title=data.title, kind=data.kind,
                  extra_columns=[])
    # Column defaults apply at flush; set them now so validation sees real values.
    for col in Phase.__table__.columns:
        if getattr(phase, col.key) is None and col.default is not None and col.default.is_scalar:
            setattr(phase, col.key, col.default.arg)
    phase.submission_period_s = DEFAULT_SUBMISSION_PERIOD_S
    # Every case counts: a test phase fails incomplete submissions unless told otherwise.
    phase.case_policy = CasePolicy.FAIL if data.kind is PhaseKind.TEST else CasePolicy.WORST
    phase.case_penalties = {}
    _apply(session, phase, data)
    session.add(phase)
    session.flush()
    return phase


def update_phase(
    session: Session, user: User, challenge: Challenge, phase: Phase, data: PhaseSettings
) -> Phase:
    access.require_organizer(session, user, challenge)
    _apply(session, phase, data)
    session.flush()
    leaderboards.invalidate(session, phase.id)
    return phase


def visible(session: Session, user: User | None) -> Sequence[Challenge]:
    """Challenges the user may see (public ones, their own; admins all), oldest first."""
    return repo.visible_challenges(session, user)


def phases_of(session: Session, challenge_id: int) -> Sequence[Phase]:
    return repo.phases(session, challenge_id)
