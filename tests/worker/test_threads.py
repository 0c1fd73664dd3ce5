"""Eval children use a bounded number of threads (no oversubscription of the cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker import threads

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("cores", "concurrency", "expected"),
                         [(16, 4, 4), (2, 4, 1), (2, 1, 2), (7, 2, 3), (1, 1, 1)])
def test_default_is_the_childs_share_of_the_cores(
    cores: int, concurrency: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.config import settings

    monkeypatch.setattr(settings, "eval_threads", 0)
    assert threads.eval_threads(cores, concurrency) == expected


def test_the_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.config import settings

    monkeypatch.setattr(settings, "eval_threads", 3)
    assert threads.eval_threads(16, 4) == 3


class _Worker:
    """The part of celery's WorkController the handler reads (a full one starts a pool)."""

    def __init__(self, concurrency: object) -> None:
        self.concurrency = concurrency


def test_the_worker_records_its_pool_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's worker_init signal (sent by the parent before it forks) sets the children's
    share; "auto" or an unknown pool size leaves the cores to one child."""
    from celery.signals import worker_init

    from backend.config import settings
    from worker import celery_app  # noqa: F401  (connects the handler)

    monkeypatch.setattr(settings, "eval_threads", 0)
    monkeypatch.setattr(threads, "_concurrency", None)
    worker_init.send(sender=_Worker(3))
    assert threads.eval_threads(cores=8) == 2
    worker_init.send(sender=_Worker("auto"))
    assert threads.eval_threads(cores=8) == 8


def test_limit_applies_to_torch_and_blas() -> None:
    """In a fresh process (the limit is process-wide): SYNTHARENA_EVAL_THREADS caps torch's
    intra-op threads and every loaded BLAS/OpenMP pool."""
    code = (
        "import json, numpy, scipy.linalg, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from worker.threads import limit_threads\n"
        "n = limit_threads()\n"
        "print(json.dumps({'n': n, 'torch': torch.get_num_threads(),"
        " 'pools': [p['num_threads'] for p in threadpool_info()]}))\n"
    )
    env = {**os.environ, "SYNTHARENA_EVAL_THREADS": "1", "PYTHONPATH": str(ROOT),
           "SYNTHARENA_DEV_MODE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["n"] == 1 and got["torch"] == 1
    assert got["pools"] and all(p == 1 for p in got["pools"])
