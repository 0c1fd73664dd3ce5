from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from backend.models import CaseRunStatus, SubmissionStatus
from backend.text import STORABLE


class SubmissionIn(BaseModel):
    image_id: int
    comment: Annotated[str, Field(max_length=500), STORABLE] = ""


class SubmissionFlags(BaseModel):
    is_hidden: bool | None = None
    is_disqualified: bool | None = None
    is_baseline: bool | None = None


class SubmissionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    phase_id: int
    user_id: int
    username: str = ""
    image_id: int
    status: SubmissionStatus
    attempts: int
    cases_total: int
    cases_done: int
    current_step: str
    error_message: str
    comment: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    is_hidden: bool
    is_disqualified: bool
    is_baseline: bool
    # Aggregate metrics; null when not finished or hidden from the viewer.
    metrics: dict[str, Any] | None = None


class CaseRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    case_name: str
    status: CaseRunStatus
    attempts: int
    exit_code: int | None
    duration_s: float | None
    error_message: str
    warning: str = ""  # e.g. the input's geometry was imposed (phase geometry policy)
    metrics: dict[str, Any] | None = None
    stdout: str | None = None  # null when logs are hidden from the viewer
    stderr: str | None = None
