"""Enqueue worker tasks by name, only after the surrounding transaction commits.

The backend never imports the worker: it sends ``submissions.start`` by name to the broker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session

from backend.config import settings

# The one task -> queue table: the worker's task decorator routes by it and every enqueue
# looks its queue up here. ``images``: load an image and create the case runs; ``gpu``: the
# containers (one child per GPU); ``eval``: scoring, finalising, the periodic reaper,
# leaderboard recomputations and dataset imports (each import task stores cases for a few
# minutes, then queues the rest behind other work).
QUEUE_IMAGES, QUEUE_GPU, QUEUE_EVAL = "images", "gpu", "eval"
TASK_QUEUES: dict[str, str] = {
    "submissions.start": QUEUE_IMAGES,
    "cases.run": QUEUE_GPU,
    "cases.evaluate": QUEUE_EVAL,
    "submissions.finalize": QUEUE_EVAL,
    "submissions.reap": QUEUE_EVAL,
    "leaderboards.recompute": QUEUE_EVAL,
    "datasets.import": QUEUE_EVAL,
}


def queue_of(name: str) -> str:
    try:
        return TASK_QUEUES[name]
    except KeyError:
        raise ValueError(f"no queue for task {name!r}: add it to TASK_QUEUES") from None


_PENDING_KEY = "syntharena_tasks_after_commit"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedTask:
    name: str
    args: list[Any]
    queue: str


_broker_override: str | None = None


@lru_cache(maxsize=1)
def celery_client() -> Celery:
    return Celery("syntharena-backend", broker=_broker_override or settings.redis_url)


def configure(broker_url: str | None) -> None:
    """Point the client at another broker (tests use a separate Redis database)."""
    global _broker_override
    _broker_override = broker_url
    celery_client.cache_clear()


def send_now(task: QueuedTask) -> None:
    celery_client().send_task(task.name, args=task.args, queue=task.queue)


def enqueue_after_commit(session: Session, name: str, args: list[Any]) -> None:
    """Send the task (to its queue in ``TASK_QUEUES``) once the session's transaction
    commits; dropped on rollback."""
    tasks: list[QueuedTask] = session.info.setdefault(_PENDING_KEY, [])
    tasks.append(QueuedTask(name, list(args), queue_of(name)))


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a SAVEPOINT released: the outer one may roll back
        return
    tasks: list[QueuedTask] = session.info.pop(_PENDING_KEY, [])
    for task in tasks:
        try:
            send_now(task)
        except Exception:
            # The commit stands; the worker's reaper re-enqueues work left pending, so a
            # broker outage delays the submission instead of failing the request.
            log.exception("could not enqueue %s%s; the reaper will retry", task.name, task.args)


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_rollback(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # the outermost transaction rolled back
        session.info.pop(_PENDING_KEY, None)
