"""Conventions of DESIGN.md §3.6 for every task, and the docker-py boundary."""

from __future__ import annotations

import re

from tests.worker.helpers import ROOT
from worker import tasks  # noqa: F401  (registers the tasks)
from worker.celery_app import LONGEST_HARD_LIMIT_S, app

EXPECTED = {
    "submissions.start": "images",
    "cases.run": "gpu",
    "cases.evaluate": "eval",
    "submissions.finalize": "eval",
    "submissions.reap": "eval",
    "leaderboards.recompute": "eval",
    "datasets.import": "eval",
}


def test_tasks_follow_the_conventions() -> None:
    ours = {n: t for n, t in app.tasks.items() if not n.startswith("celery.")}
    assert set(ours) == set(EXPECTED)
    for name, t in ours.items():
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", name)
        assert t.acks_late and t.reject_on_worker_lost, name
        assert app.amqp.router.route({}, name)["queue"].name == EXPECTED[name], name
        assert t.time_limit and t.soft_time_limit == int(0.9 * t.time_limit), name
        assert t.time_limit <= LONGEST_HARD_LIMIT_S


def test_broker_settings() -> None:
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    vt = app.conf.broker_transport_options["visibility_timeout"]
    assert vt >= 1.1 * LONGEST_HARD_LIMIT_S - 1
    assert "submissions.reap" in {e["task"] for e in app.conf.beat_schedule.values()}


def test_only_the_sandbox_imports_docker() -> None:
    pattern = re.compile(r"^\s*(import docker|from docker)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("backend", "worker", "evaluator")
        for p in (ROOT / pkg).rglob("*.py")
        if pattern.search(p.read_text()) and p.name != "sandbox.py"
    ]
    assert offenders == []
