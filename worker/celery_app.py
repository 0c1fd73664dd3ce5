"""The Celery app and the one task decorator (DESIGN.md §3.6).

Queues (``backend.tasks_client.TASK_QUEUES``): ``images`` (submissions.start: load the image,
create case runs), ``gpu`` (cases.run: the containers; one child per GPU), ``eval``
(cases.evaluate, submissions.finalize and the periodic reaper). Start workers with e.g.::

    celery -A worker.celery_app worker -Q images,gpu,eval -c 1 -n cpu@%h
    celery -A worker.celery_app beat          # the periodic reaper (or add -B to one worker)
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, Task
from celery.signals import worker_init, worker_process_init, worker_ready
from celery.worker.control import inspect_command

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


@worker_init.connect
def _record_concurrency(sender: Any = None, **_: Any) -> None:
    # In the parent, before it forks: each child inherits the pool size it shares cores with
    # (applied when it scores: worker/steps.py; children of other queues need no torch).
    from worker import threads

    threads.set_concurrency(getattr(sender, "concurrency", None))


# Liveness of worker instances (one per process start, sandbox.INSTANCE_ID), kept in Redis:
# a worker removes only the leftovers of instances of its node whose key has expired.
INSTANCE_KEY = "syntharena:worker-instance:"
HEARTBEAT_S = 5.0
INSTANCE_TTL_S = 4 * HEARTBEAT_S


@functools.lru_cache(maxsize=1)
def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)


NODE_KEY = "syntharena:worker-node:"
_node: list[str] = []  # this process's Celery node name, once the worker is ready


def heartbeat() -> None:
    from worker import sandbox

    pipe = _redis().pipeline()
    pipe.set(INSTANCE_KEY + sandbox.INSTANCE_ID, "1", ex=int(INSTANCE_TTL_S))
    for node in _node:
        pipe.set(f"{NODE_KEY}{node}:{sandbox.INSTANCE_ID}", "1", ex=int(INSTANCE_TTL_S))
    pipe.execute()


def twins(node: str) -> list[str]:
    """Other live instances running under the Celery node name ``node``."""
    from worker import sandbox

    prefix = f"{NODE_KEY}{node}:"
    return sorted(k.decode().removeprefix(prefix) for k in _redis().scan_iter(match=prefix + "*")
                  if k.decode() != prefix + sandbox.INSTANCE_ID)


def instance_alive(instance: str) -> bool:
    return bool(_redis().exists(INSTANCE_KEY + instance))


def _beat_forever() -> None:
    """Keep this instance alive in Redis and, every beat, remove the containers of dead
    instances of this node: one killed just before this one started was still alive (its key
    not yet expired) at start, and its containers go once the key expires."""
    from worker import sandbox

    log = logging.getLogger(__name__)
    while True:
        time.sleep(HEARTBEAT_S)
        try:
            heartbeat()
            for node in _node:
                removed = sandbox.remove_leftovers(node, instance_alive)
                if removed:
                    log.warning("removed %d containers left by dead instances of %s",
                                removed, node)
        except Exception as exc:  # Redis or the engine restarting: the next beat retries
            log.warning("worker heartbeat: %s", exc)


@worker_ready.connect
def _reap_leftovers(sender: Any = None, **_: Any) -> None:
    """Containers earlier (dead) instances of this worker node left behind are removed on
    start; a live instance that runs under the same node name keeps its containers."""
    from worker import sandbox

    log = logging.getLogger(__name__)
    # A thread, not the event loop's timer: a solo-pool worker busy with a case still beats.
    threading.Thread(target=_beat_forever, name="syntharena-heartbeat", daemon=True).start()
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    _node[:] = [str(hostname)]
    try:
        heartbeat()
        others = twins(str(hostname))
        if others:  # its containers are kept, but Celery's replies by node name would merge
            log.warning("another live worker instance runs as node %s (%s): give each "
                        "instance its own name (-n NAME@%%h)", hostname, ", ".join(others))
        removed = sandbox.remove_leftovers(str(hostname), instance_alive)
    except sandbox.EngineError as exc:  # the engine is down: nothing runs on it either
        log.warning("leftover containers not removed: %s", exc)
    except Exception as exc:  # e.g. Redis unreachable: liveness unknown, nothing is removed
        log.warning("leftover containers not checked (nothing removed): %s", exc)
    else:
        if removed:
            log.warning("removed %d containers left by earlier instances of %s", removed,
                        hostname)


@inspect_command()
def cache_stats(state: Any) -> dict[str, int]:
    """``celery -A worker.celery_app inspect cache_stats``: this host's object cache (hits,
    misses, corrupt entries fetched again, evictions, bytes fetched and held), counted over
    every child since the cache was created."""
    from backend.object_cache import cache

    return cache().stats()
