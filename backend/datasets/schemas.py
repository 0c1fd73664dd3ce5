from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.models import ImportStatus, Modality
from backend.text import Text


class DatasetIn(BaseModel):
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    title: Text = Field(min_length=1, max_length=200)
    description: Text = ""
    challenge: Text | None = Field(default=None, description="Slug of the owning challenge")


class DatasetVersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    version: int
    source: str
    note: str
    case_count: int
    created_at: datetime


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    slug: str
    title: str
    description: str
    challenge_id: int | None
    versions: list[DatasetVersionOut] = []


class ImportIn(BaseModel):
    source: Literal["synthrad", "phantom", "archive", "s3"]
    path: Text | None = Field(
        default=None, description="synthrad: folder on the server; s3: s3://bucket/prefix/")
    upload_id: Text | None = Field(
        default=None, description="archive: a finished upload (POST /api/images/uploads with "
        "purpose 'dataset') of a .tar, .tar.gz, .tgz or .zip in the SynthRAD layout")
    anatomy: Literal["brain", "pelvis", "head_neck", "thorax", "abdomen"] = Field(
        default="brain", description="phantom: body region to generate"
    )
    task: Literal["mri", "cbct"] = Field(
        default="mri", description="phantom: MR -> CT (mri) or CBCT -> CT (cbct) cases"
    )
    cases: int = Field(default=4, ge=1, le=1000, description="phantom: number of cases")
    seed: int = 0
    size: Literal["small", "medium", "realistic"] = Field(
        default="small",
        description="phantom: volume size (small for tests, medium, realistic for demos)",
    )
    plans: bool = Field(
        default=False,
        description="phantom: also write photon and proton treatment plans (dose metrics)",
    )
    note: Text = ""


class CaseOut(BaseModel):
    """Organisers only: a case and its stored paths (relative to the data folder)."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    modality: Modality
    region: str
    input_image_path: str
    mask_path: str
    ground_truth_path: str
    labels_path: str | None
    plan_path: str | None


class ImportErrorOut(BaseModel):
    case: str
    error: str


class ImportJobOut(BaseModel):
    """A background import and its progress."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    status: ImportStatus
    source: str
    note: str
    cases_total: int | None = Field(description="known once the source has been read")
    cases_done: int
    bytes_done: int
    errors: list[ImportErrorOut]
    message: str
    version: int | None = Field(default=None, description="the version, once published")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
