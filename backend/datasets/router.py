from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from backend.datasets import service
from backend.datasets.schemas import (
    CaseOut,
    DatasetIn,
    DatasetOut,
    DatasetVersionOut,
    ImportIn,
    ImportJobOut,
)
from backend.db import SessionDep
from backend.deps import CurrentUser
from backend.models import Dataset, ImportJob

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


def _out(session: Session, dataset: Dataset) -> DatasetOut:
    out = DatasetOut.model_validate(dataset)
    out.versions = [DatasetVersionOut.model_validate(v)
                    for v in service.versions_of(session, dataset.id)]
    return out


@router.get("")
def list_datasets(session: SessionDep, user: CurrentUser) -> list[DatasetOut]:
    return [_out(session, d) for d in service.list_visible(session, user)]


@router.post("", status_code=201)
def create_dataset(data: DatasetIn, session: SessionDep, user: CurrentUser) -> DatasetOut:
    return _out(session, service.create(session, user, data))


@router.get("/{slug}")
def get_dataset(slug: str, session: SessionDep, user: CurrentUser) -> DatasetOut:
    return _out(session, service.get(session, user, slug))


@router.post("/{slug}/versions", status_code=201, deprecated=True)
def import_version(
    slug: str, data: ImportIn, session: SessionDep, user: CurrentUser
) -> DatasetVersionOut:
    """Import inside this request (small datasets only: it holds a request for the whole
    import). Use ``POST /{slug}/imports``, which runs it in the background."""
    dataset = service.get(session, user, slug)
    return DatasetVersionOut.model_validate(service.import_version(session, user, dataset, data))


def job_out(session: Session, job: ImportJob) -> ImportJobOut:
    out = ImportJobOut.model_validate(job)
    out.version = service.published_version(session, job)
    return out


@router.post("/{slug}/imports", status_code=202)
def start_import(slug: str, data: ImportIn, session: SessionDep, user: CurrentUser) -> ImportJobOut:
    """Queue an import (checks the source only); poll ``GET .../imports/{id}`` for progress."""
    dataset = service.get(session, user, slug)
    return job_out(session, service.start_import(session, user, dataset, data))


@router.get("/{slug}/imports/{job_id}")
def get_import(slug: str, job_id: int, session: SessionDep, user: CurrentUser) -> ImportJobOut:
    dataset = service.get(session, user, slug)
    return job_out(session, service.import_job(session, user, dataset, job_id))


@router.get("/{slug}/versions/{version}/cases")
def list_cases(slug: str, version: int, session: SessionDep, user: CurrentUser) -> list[CaseOut]:
    dataset = service.get(session, user, slug)
    return [CaseOut.model_validate(c) for c in service.cases_of(session, user, dataset, version)]
