"""The periodic reaper: finds work a lost worker left behind and requeues or fails it.

A worker killed mid-run leaves case runs RUNNING whose message Redis will only redeliver after
the visibility timeout (hours). The reaper asks the live workers what they are doing
(``inspect().active()``); a RUNNING case run that no live task owns, older than the grace
period, goes back to PENDING and is enqueued again (up to ``case_run_max_attempts``, then it
fails with a reason). A run older than its own time limit plus slack is stale regardless.
Stuck submissions get their next step re-sent; every step is idempotent, so a repeat is a no-op.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.config import settings
from backend.db import session_scope
from backend.models import (
    CaseRun,
    CaseRunStatus,
    Phase,
    Result,
    Submission,
    SubmissionStatus,
    utcnow,
)
from backend.submissions import state
from backend.tasks_client import enqueue_after_commit
from worker import sandbox, steps
from worker.celery_app import CASE_RUN_MAX_S, SLACK_S, app

log = logging.getLogger(__name__)
S = SubmissionStatus
R = CaseRunStatus


@dataclass
class ReapReport:
    requeued_runs: list[int] = field(default_factory=list)
    failed_runs: list[int] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    containers_removed: int = 0


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


def reap(grace_s: float | None = None) -> ReapReport:
    grace = timedelta(seconds=settings.reaper_grace_s if grace_s is None else grace_s)
    report = ReapReport()
    active = _active_tasks()
    owned_runs: set[int] = set()
    busy_subs: set[int] = set()
    for t in active or []:
        args = t.get("args") or []
        if t.get("name") == "cases.run" and len(args) == 2:
            owned_runs.update(int(r) for r in args[1])
            busy_subs.add(int(args[0]))
        elif t.get("name") in ("submissions.start", "submissions.finalize") and args:
            busy_subs.add(int(args[0]))
    now = utcnow()

    with session_scope() as s:
        stale = s.execute(
            select(CaseRun.id, CaseRun.submission_id, CaseRun.started_at, Phase)
            .join(Submission, Submission.id == CaseRun.submission_id)
            .join(Phase, Phase.id == Submission.phase_id)
            .where(CaseRun.status == R.RUNNING, Submission.status == S.RUNNING)
        ).all()
        requeue: dict[int, list[int]] = defaultdict(list)
        phases: dict[int, Phase] = {}
        failed_subs: set[int] = set()
        for run_id, sub_id, started_at, phase in stale:
            age = now - (started_at or now)
            hard = timedelta(seconds=phase.case_time_limit_s * phase.batch_size + SLACK_S)
            orphaned = active is not None and run_id not in owned_runs and age > grace
            if not (orphaned or age > hard):
                continue
            run = state.lock_case_run(s, run_id)
            if run.status is not R.RUNNING:
                continue
            if run.attempts >= settings.case_run_max_attempts:
                state.finish_case_run(s, run_id, R.FAILED, error_message=(
                    f"The worker running this case was lost {run.attempts} times; the case "
                    "was given up. If it keeps happening, the algorithm may crash the host."))
                report.failed_runs.append(run_id)
                failed_subs.add(sub_id)
            else:
                run.status = R.PENDING
                requeue[sub_id].append(run_id)
                phases[sub_id] = phase
                report.requeued_runs.append(run_id)
        for sub_id, run_ids in requeue.items():
            size = phases[sub_id].batch_size
            for i in range(0, len(run_ids), size):
                enqueue_after_commit(s, "cases.run", [sub_id, run_ids[i : i + size]], "gpu")
        for sub_id in failed_subs:  # the last case may just have failed: move the submission on
            steps.advance(s, state.lock_submission(s, sub_id))
        _resend_stuck(s, now - grace, busy_subs, report)

    try:
        report.containers_removed = sandbox.remove_containers_older_than(CASE_RUN_MAX_S + SLACK_S)
    except sandbox.EngineError as exc:  # restarting: the next round removes them
        log.warning("reaper: containers not checked: %s", exc)
    if report.requeued_runs or report.failed_runs or report.resent:
        log.warning("reaper: %s", report)
    return report


def _resend_stuck(s: Session, before: Any, busy: set[int], report: ReapReport) -> None:
    """Re-send the next step of submissions that have not moved since ``before``."""
    subs = s.scalars(
        select(Submission).where(
            Submission.status.in_([S.PENDING, S.RUNNING, S.EVALUATING]),
            Submission.updated_at < before,
        )
    ).all()
    for sub in subs:
        if sub.id in busy:
            continue
        if sub.status is S.PENDING:
            enqueue_after_commit(s, "submissions.start", [sub.id], "images")
            report.resent.append(f"start {sub.id}")
            continue
        runs = s.scalars(select(CaseRun).where(CaseRun.submission_id == sub.id)).all()
        if sub.status is S.RUNNING and not runs:
            enqueue_after_commit(s, "submissions.start", [sub.id], "images")
            report.resent.append(f"start {sub.id}")
            continue
        waiting = [r.id for r in runs if r.status is R.PENDING]
        if sub.status is S.RUNNING and waiting:
            # Their message may sit unacked with a dead worker until the visibility timeout.
            phase = s.get(Phase, sub.phase_id)
            size = phase.batch_size if phase else 1
            for i in range(0, len(waiting), size):
                enqueue_after_commit(s, "cases.run", [sub.id, waiting[i : i + size]], "gpu")
            report.resent.append(f"run {sub.id}: {waiting}")
        scored = set(s.scalars(select(Result.case_id).where(Result.submission_id == sub.id)))
        for run in runs:
            if run.status is R.SUCCEEDED and run.case_id not in scored:
                enqueue_after_commit(s, "cases.evaluate", [run.id], "eval")
                report.resent.append(f"evaluate {run.id}")
        if sub.status is S.EVALUATING:
            enqueue_after_commit(s, "submissions.finalize", [sub.id], "eval")
            report.resent.append(f"finalize {sub.id}")
        # Touch it so a slow queue does not get the same messages every interval.
        sub.updated_at = utcnow()
