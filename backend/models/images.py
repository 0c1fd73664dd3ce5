"""Algorithm container images (``docker save`` tarballs) and their resumable uploads."""

from __future__ import annotations

import enum

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, TimestampMixin, str_enum


class ImageStatus(enum.StrEnum):
    VALIDATING = "validating"
    VALID = "valid"
    INVALID = "invalid"


class UploadStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETE = "complete"
    ABORTED = "aborted"


class AlgorithmImage(TimestampMixin, Base):
    __tablename__ = "algorithm_images"
    # Unique per owner: one user's re-upload gets a friendly message; other users' images are
    # never revealed by a collision.
    __table_args__ = (UniqueConstraint("owner_id", "sha256"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the tarball as uploaded
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[ImageStatus] = mapped_column(str_enum(ImageStatus, "image_status"))
    validation_message: Mapped[str] = mapped_column(Text, default="")
    # Storage key under the storage backend (local: relative to data_dir/images).
    storage_key: Mapped[str] = mapped_column(String(500))
    # Docker image id ("sha256:<config digest>"): the worker's cache key after `docker load`.
    docker_image_id: Mapped[str | None] = mapped_column(String(80))
    compression: Mapped[str | None] = mapped_column(String(8))  # none | gzip | xz


class ImageUpload(TimestampMixin, Base):
    """A resumable chunked upload (create -> chunks with Content-Range -> complete)."""

    __tablename__ = "image_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    received_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[UploadStatus] = mapped_column(str_enum(UploadStatus, "upload_status"))
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("algorithm_images.id", ondelete="SET NULL")
    )
