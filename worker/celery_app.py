"""The Celery app and the one task decorator (DESIGN.md §3.6).

Queues (``backend.tasks_client.TASK_QUEUES``): ``images`` (submissions.start: load the image,
create case runs), ``gpu`` (cases.run: the containers; one child per GPU), ``eval``
(cases.evaluate, submissions.finalize and the periodic reaper). Start workers with e.g.::

    celery -A worker.celery_app worker -Q images,gpu,eval -c 1 -n cpu@%h
    celery -A worker.celery_app beat          # the periodic reaper (or add -B to one worker)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready

from backend.config import settings
from backend.tasks_client import QUEUE_EVAL, queue_of

# Hard time limits (s). A case run's own limit is passed per call (phase limit x batch + slack)
# and can never exceed CASE_RUN_MAX_S; the broker's visibility timeout must exceed them all,
# or Redis would hand a still-running task to a second worker.
SLACK_S = 300
IMAGE_LOAD_LIMIT_S = 3600
CASE_RUN_MAX_S = settings.max_case_time_limit_s + SLACK_S
EVAL_LIMIT_S = 1800
LONGEST_HARD_LIMIT_S = max(IMAGE_LOAD_LIMIT_S, CASE_RUN_MAX_S, EVAL_LIMIT_S)

app = Celery("syntharena", broker=settings.redis_url, include=["worker.tasks"])
app.conf.update(
    task_default_queue=QUEUE_EVAL,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,  # state lives in PostgreSQL, never in a result backend
    broker_transport_options={"visibility_timeout": int(1.1 * LONGEST_HARD_LIMIT_S)},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    accept_content=["json"],
    beat_schedule={
        "reap-stale-work": {
            "task": "submissions.reap",
            "schedule": float(settings.reaper_interval_s),
            "options": {"queue": queue_of("submissions.reap"),
                        "expires": float(settings.reaper_interval_s)},
        }
    },
)

F = TypeVar("F", bound=Callable[..., Any])


def task(name: str, *, time_limit_s: int) -> Callable[[F], Task[Any, Any]]:
    """The one task decorator: explicit ``domain.verb`` name routed to its queue in
    ``backend.tasks_client.TASK_QUEUES``, late ack, soft limit 0.9 x hard."""
    if "." not in name:
        raise ValueError(f"task names are 'domain.verb', got {name!r}")
    queue = queue_of(name)

    def wrap(fn: F) -> Task[Any, Any]:
        # Routing by name (a task's own ``queue`` attribute is deprecated in Celery 5).
        app.conf.task_routes = {**(app.conf.task_routes or {}), name: {"queue": queue}}
        registered: Task[Any, Any] = app.task(
            name=name,
            acks_late=True,
            reject_on_worker_lost=True,
            time_limit=time_limit_s,
            soft_time_limit=int(0.9 * time_limit_s),
            ignore_result=True,
        )(fn)
        return registered

    return wrap


def child_gpu() -> str | None:
    """The GPU pinned to this worker child (child index modulo the configured GPUs)."""
    if not settings.worker_gpu_ids:
        return None
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0) or 0
    return settings.worker_gpu_ids[int(index) % len(settings.worker_gpu_ids)]


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # Forked children must not share the parent's database connections.
    from backend.db import get_engine

    get_engine().dispose(close=False)


@worker_ready.connect
def _reap_leftovers(sender: Any = None, **_: Any) -> None:
    """Containers this worker node left behind when it was killed are removed on start."""
    from worker import sandbox

    hostname = getattr(sender, "hostname", None)
    if hostname:
        try:
            sandbox.remove_containers(**{sandbox.LABEL_WORKER: str(hostname)})
        except sandbox.EngineError as exc:  # the engine is down: nothing runs on it either
            logging.getLogger(__name__).warning("leftover containers not removed: %s", exc)
