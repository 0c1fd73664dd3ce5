"""All SQLAlchemy models, aggregated so Alembic and the worker import one module."""

from backend.models.auth import ApiToken, ChallengeMember, ChallengeRole, User
from backend.models.base import NAMING_CONVENTION, Base, utcnow
from backend.models.challenges import (
    CasePolicy,
    Challenge,
    GeometryPolicy,
    Phase,
    PhaseKind,
    RankingMethod,
    SubmissionSelection,
)
from backend.models.datasets import (
    Case,
    Dataset,
    DatasetVersion,
    ImportJob,
    ImportStatus,
    Modality,
)
from backend.models.images import AlgorithmImage, ImageStatus, ImageUpload, UploadStatus
from backend.models.leaderboards import LeaderboardSnapshot
from backend.models.submissions import (
    ACTIVE_STATUSES,
    ALLOWED_TRANSITIONS,
    CASE_RUN_TRANSITIONS,
    COUNTED_STATUSES,
    TERMINAL_RUN_STATUSES,
    TERMINAL_STATUSES,
    AggregateResult,
    CaseRun,
    CaseRunStatus,
    Result,
    Submission,
    SubmissionStatus,
)

__all__ = [
    "ACTIVE_STATUSES",
    "ALLOWED_TRANSITIONS",
    "CASE_RUN_TRANSITIONS",
    "COUNTED_STATUSES",
    "NAMING_CONVENTION",
    "TERMINAL_RUN_STATUSES",
    "TERMINAL_STATUSES",
    "AggregateResult",
    "AlgorithmImage",
    "ApiToken",
    "Base",
    "Case",
    "CasePolicy",
    "CaseRun",
    "CaseRunStatus",
    "Challenge",
    "ChallengeMember",
    "ChallengeRole",
    "Dataset",
    "DatasetVersion",
    "GeometryPolicy",
    "ImageStatus",
    "ImageUpload",
    "ImportJob",
    "ImportStatus",
    "LeaderboardSnapshot",
    "Modality",
    "Phase",
    "PhaseKind",
    "RankingMethod",
    "Result",
    "Submission",
    "SubmissionSelection",
    "SubmissionStatus",
    "UploadStatus",
    "User",
    "utcnow",
]
