"""Organisers: the live progress of background dataset imports (HTMX polls the fragment)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from backend.datasets import service as datasets_service
from backend.db import SessionDep
from backend.models import ImportJob, ImportStatus
from backend.web.deps import PageUser
from backend.web.templating import templates

router = APIRouter()


def import_view(session: Session, slug: str, job: ImportJob) -> dict[str, Any]:
    active = job.status in (ImportStatus.QUEUED, ImportStatus.RUNNING)
    total = job.cases_total
    percent = round(100 * job.cases_done / total) if total else (100 if not active else 0)
    return {
        "id": job.id, "slug": slug, "status": job.status.value, "active": active,
        "cases": f"case {job.cases_done}/{'?' if total is None else total}",
        "bytes": job.bytes_done, "percent": percent, "errors": job.errors,
        "message": job.message, "source": job.source,
        "version": datasets_service.published_version(session, job),
    }


def recent_imports(session: Session, slug: str, dataset_id: int) -> list[dict[str, Any]]:
    return [import_view(session, slug, j)
            for j in datasets_service.recent_imports(session, dataset_id)]


@router.get("/datasets/{ds_slug}/imports/{job_id}/status")
def import_status_fragment(
    request: Request, ds_slug: str, job_id: int, session: SessionDep, user: PageUser
) -> Response:
    """The progress box alone; polled every 2 s while the import is queued or running."""
    dataset = datasets_service.get(session, user, ds_slug)
    job = datasets_service.import_job(session, user, dataset, job_id)
    view = import_view(session, ds_slug, job)
    view["reload_on_finish"] = True
    return templates.TemplateResponse(request, "partials/import_status.html", {"j": view},
                                      headers={"Cache-Control": "no-store"})
