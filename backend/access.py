"""Who may see and do what in a challenge — the one access policy of the API and the pages.
Site admins may do everything."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from backend.challenges import repository as challenges_repo
from backend.errors import ForbiddenError, NotFoundError
from backend.models import Challenge, ChallengeRole, Phase, PhaseKind, User


def role_in(session: Session, user: User | None, challenge_id: int) -> ChallengeRole | None:
    if user is None:
        return None
    return challenges_repo.member_role(session, user.id, challenge_id)


def is_organizer(session: Session, user: User | None, challenge_id: int) -> bool:
    if user is None:
        return False
    return user.is_admin or role_in(session, user, challenge_id) is ChallengeRole.ORGANIZER


def organises_any(session: Session, user: User) -> bool:
    """Whether the user organises some challenge (or is an admin)."""
    return user.is_admin or challenges_repo.organises_any(session, user.id)


def can_view(session: Session, user: User | None, challenge: Challenge) -> bool:
    if challenge.is_public:
        return True
    return user is not None and (user.is_admin or role_in(session, user, challenge.id) is not None)


def challenge_by_slug(session: Session, slug: str, user: User | None) -> Challenge:
    challenge = challenges_repo.challenge_by_slug(session, slug)
    # A private challenge is "not found" to outsiders: its existence is not revealed.
    if challenge is None or not can_view(session, user, challenge):
        raise NotFoundError(f"There is no challenge '{slug}'.")
    return challenge


def require_organizer(session: Session, user: User, challenge: Challenge) -> None:
    if not is_organizer(session, user, challenge.id):
        raise ForbiddenError(f"Only organisers of '{challenge.slug}' may do this.")


def phase_by_slug(session: Session, challenge: Challenge, phase_slug: str) -> Phase:
    phase = challenges_repo.phase_by_slug(session, challenge.id, phase_slug)
    if phase is None:
        raise NotFoundError(f"Challenge '{challenge.slug}' has no phase '{phase_slug}'.")
    return phase


# Slice images of a case: the participant's own input and sCT where the phase shows per-case
# results; the reference CT (ground truth) and the difference only to organisers, or in a
# debug phase that shows per-case results (its cases are not the hidden test set).
PARTICIPANT_IMAGES = ("input", "sct")
ALL_IMAGES = ("input", "sct", "ct", "diff")
# Dose views follow the same line: the dose on the participant's own sCT (over the sCT); the
# dose on the CT, the difference and the gamma map come from the reference CT.
PARTICIPANT_DOSE = ("dose_sct",)
ALL_DOSE = ("dose_ct", "dose_sct", "dose_diff", "gamma")


@dataclass(frozen=True)
class SubmissionView:
    """What a viewer who may open a submission (its owner or an organiser) sees of it."""

    organizer: bool
    scores: bool  # the aggregate and per-case metric values
    cases: bool  # the per-case table (status, duration, error)
    logs: bool  # the containers' stdout/stderr
    images: tuple[str, ...]  # slice kinds of the case viewer
    dose: tuple[str, ...] = ()  # dose views of the case viewer (DVH: sCT curves with any)
    ground_truth: bool = False  # images and curves derived from the reference CT

    @property
    def case_scores(self) -> bool:
        return self.cases and self.scores


def submission_view(phase: Phase, organizer: bool) -> SubmissionView:
    if organizer:
        return SubmissionView(True, True, True, True, ALL_IMAGES, ALL_DOSE, True)
    images: tuple[str, ...] = ()
    dose: tuple[str, ...] = ()
    ground_truth = phase.show_case_results and phase.kind is PhaseKind.DEBUG
    if phase.show_case_results:
        images = ALL_IMAGES if ground_truth else PARTICIPANT_IMAGES
        dose = ALL_DOSE if ground_truth else PARTICIPANT_DOSE
    return SubmissionView(
        organizer=False,
        # Participants see their own scores only where the phase's leaderboard is public.
        scores=phase.leaderboard_public,
        cases=phase.show_case_results,
        logs=phase.show_case_logs,
        images=images,
        dose=dose,
        ground_truth=ground_truth,
    )
