from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from backend import access
from backend.datasets import jobs
from backend.datasets import repository as repo
from backend.datasets.schemas import DatasetIn, ImportIn
from backend.errors import ConflictError, ForbiddenError, NotFoundError
from backend.models import Case, Challenge, Dataset, DatasetVersion, ImportJob, User


def _require_manager(session: Session, user: User, dataset: Dataset) -> None:
    if user.is_admin:
        return
    if dataset.challenge_id is None or not access.is_organizer(session, user, dataset.challenge_id):
        raise ForbiddenError(f"Only organisers of the challenge owning '{dataset.slug}' may.")


def create(session: Session, user: User, data: DatasetIn) -> Dataset:
    challenge: Challenge | None = None
    if data.challenge is not None:
        challenge = access.challenge_by_slug(session, data.challenge, user)
        access.require_organizer(session, user, challenge)
    elif not user.is_admin:
        raise ForbiddenError("Give the challenge this dataset belongs to (you organise it).")
    if repo.by_slug(session, data.slug) is not None:
        raise ConflictError(f"A dataset '{data.slug}' already exists; pick another slug.")
    dataset = Dataset(
        slug=data.slug,
        title=data.title,
        description=data.description,
        challenge_id=challenge.id if challenge else None,
        created_by_id=user.id,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get(session: Session, user: User, slug: str) -> Dataset:
    dataset = repo.by_slug(session, slug)
    if dataset is None:
        raise NotFoundError(f"There is no dataset '{slug}'.")
    _require_manager(session, user, dataset)
    return dataset


def list_visible(session: Session, user: User) -> Sequence[Dataset]:
    return repo.visible_to(session, user)


def import_version(session: Session, user: User, dataset: Dataset, data: ImportIn) -> (
    DatasetVersion
):
    """The whole import inside this request (small datasets; ``start_import`` for large)."""
    _require_manager(session, user, dataset)
    return jobs.import_now(session, user, dataset, data)


def start_import(session: Session, user: User, dataset: Dataset, data: ImportIn) -> ImportJob:
    """Check the source and queue the import as a background job (``datasets.import``)."""
    _require_manager(session, user, dataset)
    return jobs.start(session, user, dataset, data)


def import_job(session: Session, user: User, dataset: Dataset, job_id: int) -> ImportJob:
    _require_manager(session, user, dataset)
    job = repo.job(session, dataset.id, job_id)
    if job is None:
        raise NotFoundError(f"Dataset '{dataset.slug}' has no import {job_id}.")
    return job


def recent_imports(session: Session, dataset_id: int) -> Sequence[ImportJob]:
    return repo.recent_jobs(session, dataset_id)


def cases_of(session: Session, user: User, dataset: Dataset, number: int) -> Sequence[Case]:
    _require_manager(session, user, dataset)
    version = repo.version(session, dataset.id, number)
    if version is None:
        raise NotFoundError(f"Dataset '{dataset.slug}' has no version {number}.")
    return repo.cases(session, version.id)


def versions_of(session: Session, dataset_id: int) -> Sequence[DatasetVersion]:
    return repo.versions(session, dataset_id)


def published_version(session: Session, job: ImportJob) -> int | None:
    """The version number the job published (None while it runs or when it failed)."""
    if job.dataset_version_id is None:
        return None
    version = session.get(DatasetVersion, job.dataset_version_id)
    return version.version if version is not None else None
