"""Thin Celery tasks: ids in, one step of worker.steps, nothing returned (state is in the DB)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import current_task

from backend.datasets import jobs as import_jobs
from backend.errors import NotFoundError
from backend.leaderboards import service as leaderboards
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


@task("leaderboards.recompute", time_limit_s=EVAL_LIMIT_S)
def recompute_leaderboard(phase_id: int) -> None:
    """Store the phase's leaderboard (a no-op when a reader or an earlier run already did)."""
    leaderboards.recompute(phase_id)


# An import is hours of CPU at most one case at a time; beside the API on one host it would take
# the API's CPU (health p99 188 ms measured on 2 cores; niced: 67 ms, benchmarks/
# dataset_import.py). Linux keeps a nice value per thread: the import runs in a thread of its
# own at this level, so the child's later tasks (scoring) keep their priority.
IMPORT_NICE = 10


def at_low_priority(fn: Callable[[], None], nice: int = IMPORT_NICE) -> None:
    failure: list[BaseException] = []

    def body() -> None:
        try:
            with contextlib.suppress(OSError, AttributeError):  # not Linux: as it is
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(
                    os.PRIO_PROCESS, tid)))
            fn()
        except BaseException as exc:  # re-raised in the task's own thread
            failure.append(exc)

    thread = threading.Thread(target=body, name="syntharena-import")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@task("datasets.import", time_limit_s=IMAGE_LOAD_LIMIT_S)
def import_dataset(job_id: int) -> None:
    at_low_priority(lambda: import_jobs.run(job_id))
