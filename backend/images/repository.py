from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import (
    AlgorithmImage,
    ImageStatus,
    ImageUpload,
    Submission,
    UploadStatus,
)


def bytes_in_use(session: Session, owner_id: int) -> int:
    stored = session.scalar(
        select(func.coalesce(func.sum(AlgorithmImage.size_bytes), 0)).where(
            AlgorithmImage.owner_id == owner_id, AlgorithmImage.status != ImageStatus.INVALID
        )
    )
    reserved = session.scalar(
        select(func.coalesce(func.sum(ImageUpload.total_bytes), 0)).where(
            ImageUpload.owner_id == owner_id, ImageUpload.status == UploadStatus.OPEN
        )
    )
    return int(stored or 0) + int(reserved or 0)


def stale_uploads(session: Session, owner_id: int | None,
                  cutoff: datetime) -> Sequence[ImageUpload]:
    """Open uploads idle since before ``cutoff`` (one owner's, or everyone's), locked; one
    that a request is writing now (locked by it) is skipped."""
    query = select(ImageUpload).where(ImageUpload.status == UploadStatus.OPEN,
                                      ImageUpload.updated_at < cutoff)
    if owner_id is not None:
        query = query.where(ImageUpload.owner_id == owner_id)
    return session.scalars(query.with_for_update(skip_locked=True)).all()


def lock_upload(session: Session, upload_id: str) -> ImageUpload | None:
    return session.scalars(
        select(ImageUpload)
        .where(ImageUpload.id == upload_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def image_by_sha(session: Session, owner_id: int, sha256: str) -> AlgorithmImage | None:
    return session.scalars(
        select(AlgorithmImage).where(
            AlgorithmImage.owner_id == owner_id, AlgorithmImage.sha256 == sha256
        )
    ).one_or_none()


def images_of(session: Session, owner_id: int, offset: int = 0,
              limit: int | None = None) -> Sequence[AlgorithmImage]:
    return session.scalars(
        select(AlgorithmImage)
        .where(AlgorithmImage.owner_id == owner_id)
        .order_by(AlgorithmImage.id.desc())
        .offset(offset).limit(limit)
    ).all()


def used_by_submissions(session: Session, image_id: int) -> bool:
    stmt = select(Submission.id).where(Submission.image_id == image_id).limit(1)
    return session.scalars(stmt).first() is not None
