"""The periodic reaper: finds work a lost worker left behind.

A worker killed mid-run leaves case runs RUNNING whose message Redis will only redeliver after
the visibility timeout (hours). The reaper asks the live workers what they are doing
(``inspect().active()``) and leaves the rules — which runs to requeue or fail, which stuck
submissions get their next step again — to ``backend.submissions.pipeline.reap`` (and
``backend.datasets.jobs.reap`` for dataset imports); it also
removes containers older than any case run may live.
"""

from __future__ import annotations

import logging
from typing import Any

from backend.config import settings
from backend.datasets import jobs as import_jobs
from backend.submissions.pipeline import LiveWork, ReapReport
from backend.submissions.pipeline import reap as reap_rules
from worker import sandbox
from worker.celery_app import CASE_RUN_MAX_S, IMAGE_LOAD_LIMIT_S, SLACK_S, app

log = logging.getLogger(__name__)


def _active_tasks() -> list[dict[str, Any]] | None:
    """Tasks the live workers are executing now; None when no worker answered."""
    try:
        replies = app.control.inspect(timeout=1.0).active()
    except Exception as exc:  # broker hiccup: act only on the time-based rules
        log.warning("inspect failed: %s", exc)
        return None
    if not replies:
        return None
    return [dict(t) for tasks in replies.values() for t in tasks]


def live_work() -> LiveWork | None:
    """The case runs and submissions the live workers own; None when no worker answered."""
    return _live_from(_active_tasks())


def _live_from(active: list[dict[str, Any]] | None) -> LiveWork | None:
    if active is None:
        return None
    runs: set[int] = set()
    subs: set[int] = set()
    for task in active:
        args = task.get("args") or []
        if task.get("name") == "cases.run" and len(args) == 2:
            runs.update(int(r) for r in args[1])
            subs.add(int(args[0]))
        elif task.get("name") in ("submissions.start", "submissions.finalize") and args:
            subs.add(int(args[0]))
    return LiveWork(frozenset(runs), frozenset(subs))


def live_imports(active: list[dict[str, Any]] | None) -> frozenset[int] | None:
    """The import jobs the live workers are running; None when no worker answered."""
    if active is None:
        return None
    return frozenset(int(t["args"][0]) for t in active
                     if t.get("name") == import_jobs.TASK and t.get("args"))


def reap(grace_s: float | None = None) -> ReapReport:
    grace = float(settings.reaper_grace_s if grace_s is None else grace_s)
    active = _active_tasks()
    report = reap_rules(_live_from(active), grace_s=grace, slack_s=SLACK_S)
    report.resent += [f"import {j}" for j in import_jobs.reap(
        live_imports(active), grace_s=grace, hard_s=IMAGE_LOAD_LIMIT_S + SLACK_S)]
    try:
        report.containers_removed = sandbox.remove_containers_older_than(CASE_RUN_MAX_S + SLACK_S)
    except sandbox.EngineError as exc:  # restarting: the next round removes them
        log.warning("reaper: containers not checked: %s", exc)
    if report.requeued_runs or report.failed_runs or report.resent:
        log.warning("reaper: %s", report)
    return report
