"""How many threads the metrics of one eval task may use (torch intra-op and BLAS/OpenMP).

A prefork worker runs ``concurrency`` children; each child's torch and BLAS would otherwise
start one thread per core, so ``concurrency`` busy children run ``concurrency x cores``
threads on ``cores`` cores (oversubscription: measured 2-3x slower dose recompute on a busy
2-core machine).  Each child gets ``settings.eval_threads`` threads, or by default its share
of the cores this process may run on.
"""

from __future__ import annotations

import os

from backend.config import settings

# The parent worker's pool size, recorded before it forks its children (worker_init);
# None outside a Celery worker (the CLI, tests), where a task has the cores to itself.
_concurrency: int | None = None


def set_concurrency(value: object) -> None:
    """Record the worker's pool size (an int; "auto" or unset leaves one child per core)."""
    global _concurrency
    _concurrency = value if isinstance(value, int) and value > 0 else None


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. ``docker --cpuset-cpus``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def eval_threads(cores: int | None = None, concurrency: int | None = None) -> int:
    """Threads per eval task: the setting when > 0, else the cores shared by the children."""
    if settings.eval_threads > 0:
        return settings.eval_threads
    cores = available_cores() if cores is None else cores
    children = (_concurrency or 1) if concurrency is None else concurrency
    return max(1, cores // max(1, children))


def limit_threads(n: int | None = None) -> int:
    """Cap torch's intra-op threads and every BLAS/OpenMP pool of this process at ``n``.

    Process-wide and idempotent: applied before each scoring, so libraries loaded since the
    last call (threadpoolctl limits loaded ones) are capped too.  Returns the limit applied.
    """
    import torch
    from threadpoolctl import threadpool_limits

    n = eval_threads() if n is None else n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    threadpool_limits(limits=n)  # not as a context: the limit stays for this process
    return n
