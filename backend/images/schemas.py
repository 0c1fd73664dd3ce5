from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.models import ImageStatus, UploadStatus
from backend.text import Text


class UploadIn(BaseModel):
    name: Text = Field(min_length=1, max_length=200, description="e.g. my-algorithm:v3")
    size_bytes: int = Field(gt=0)
    purpose: Literal["image", "dataset"] = Field(
        default="image", description="dataset: an archive for a dataset import (organisers; "
        "not completed as an image but named by ImportIn.upload_id)")


class UploadOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    total_bytes: int
    received_bytes: int
    status: UploadStatus
    image_id: int | None
    max_chunk_bytes: int = 0


class ImageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    sha256: str
    size_bytes: int
    status: ImageStatus
    validation_message: str
    docker_image_id: str | None
    compression: str | None
    created_at: datetime


class ImageCreatedOut(ImageOut):
    notice: str | None = Field(default=None, description="Set when the same bytes were "
                               "uploaded before: the earlier image is returned")
