"""Versioned datasets of hidden cases.

Paths are stored relative to ``settings.data_dir``. Inputs (what a container sees) sit under
``inputs/…``; ground truth, labels and plans under ``groundtruth/…``, which only the worker
reads and which is never mounted into a participant container.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, TimestampMixin, str_enum


class Modality(enum.StrEnum):
    MRI = "mri"
    CBCT = "cbct"


class Dataset(TimestampMixin, Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # The challenge whose organisers may use and manage it (None: site admins only).
    challenge_id: Mapped[int | None] = mapped_column(
        ForeignKey("challenges.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class DatasetVersion(TimestampMixin, Base):
    """An immutable snapshot of a dataset's cases; phases point at one version."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int]
    source: Mapped[str] = mapped_column(String(500))  # e.g. "synthrad2023:/data/Task1"
    note: Mapped[str] = mapped_column(Text, default="")
    case_count: Mapped[int] = mapped_column(default=0)


class Case(TimestampMixin, Base):
    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("dataset_version_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))  # e.g. "1BA001"
    modality: Mapped[Modality] = mapped_column(str_enum(Modality, "modality"))
    region: Mapped[str] = mapped_column(String(64))  # e.g. "Head and Neck", "brain", "pelvis"
    # Inputs, relative to data_dir, under inputs/.
    input_image_path: Mapped[str] = mapped_column(String(1000))
    mask_path: Mapped[str] = mapped_column(String(1000))
    # Hidden, relative to data_dir, under groundtruth/.
    ground_truth_path: Mapped[str] = mapped_column(String(1000))
    labels_path: Mapped[str | None] = mapped_column(String(1000))
    plan_path: Mapped[str | None] = mapped_column(String(1000))


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ImportJob(TimestampMixin, Base):
    """One dataset import, run in the background case by case (``backend.datasets.jobs``).

    ``imported`` maps each finished case's name to its stored paths: a case is done exactly
    when it is there (committed with the progress counts), so a resumed job skips it. The
    version and its cases are created together once every case is in, so a phase never sees
    half a dataset.
    """

    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[ImportStatus] = mapped_column(
        str_enum(ImportStatus, "import_status"), default=ImportStatus.QUEUED, index=True
    )
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the checked request
    source: Mapped[str] = mapped_column(String(500))  # becomes the version's source
    note: Mapped[str] = mapped_column(Text, default="")
    target_dir: Mapped[str] = mapped_column(String(500), default="")  # under inputs/, groundtruth/
    cases_total: Mapped[int | None] = mapped_column(default=None)
    cases_done: Mapped[int] = mapped_column(default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)  # {case, error}
    imported: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(default=0)  # times the reaper re-sent it
    runner: Mapped[str | None] = mapped_column(String(64))  # the task run that owns the job
    dataset_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="SET NULL")
    )
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
