"""Thin Celery tasks: ids in, one step of worker.steps, nothing returned (state is in the DB)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from celery import current_task

from backend.datasets import jobs as import_jobs
from backend.errors import NotFoundError
from worker import steps
from worker.celery_app import (
    CASE_RUN_MAX_S,
    EVAL_LIMIT_S,
    IMAGE_LOAD_LIMIT_S,
    child_gpu,
    task,
)
from worker.reaper import reap

log = logging.getLogger(__name__)


@contextmanager
def _gone_is_done() -> Iterator[None]:
    """A row deleted since the message was sent (e.g. a removed submission): nothing to do."""
    try:
        yield
    except NotFoundError as exc:
        log.info("skipped: %s", exc.message)


@task("submissions.start", time_limit_s=IMAGE_LOAD_LIMIT_S)
def start_submission(submission_id: int) -> None:
    with _gone_is_done():
        steps.start_submission(submission_id)


@task("cases.run", time_limit_s=CASE_RUN_MAX_S)
def run_cases(submission_id: int, case_run_ids: list[int]) -> None:
    worker_name = str(getattr(current_task.request, "hostname", None) or "local")
    with _gone_is_done():
        steps.run_cases(submission_id, case_run_ids, worker_name=worker_name, gpu=child_gpu())


@task("cases.evaluate", time_limit_s=EVAL_LIMIT_S)
def evaluate_case(case_run_id: int) -> None:
    with _gone_is_done():
        steps.evaluate_case(case_run_id)


@task("submissions.finalize", time_limit_s=EVAL_LIMIT_S)
def finalize_submission(submission_id: int) -> None:
    with _gone_is_done():
        steps.finalize_submission(submission_id)


@task("submissions.reap", time_limit_s=EVAL_LIMIT_S)
def reap_stale() -> None:
    reap()


@task("datasets.import", time_limit_s=IMAGE_LOAD_LIMIT_S)
def import_dataset(job_id: int) -> None:
    import_jobs.run(job_id)
