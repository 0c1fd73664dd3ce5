"""The submission workflow's rules, in one place: what happens next at every step.

The worker's steps (``worker/steps.py``) do the I/O — load the image, provision ``/input``, run
the sandbox, validate and store the output, compute metrics — and ask this module for every
decision; the reaper (``worker/reaper.py``) asks it what to do with work a lost worker left.
Its SQL lives in ``repository.py``, its status writes go through ``state.py``'s two state
machines, and every next step is enqueued after the commit (``tasks_client``)::

    submissions.start     claim_start: PENDING -> RUNNING; (worker loads the image)
                          image_loaded: case runs created, enqueue cases.run per batch
                          (batches split by region and input modality)
    cases.run             claim_runs: case runs PENDING -> RUNNING; (worker runs the container)
                          record_runs: -> SUCCEEDED / FAILED / TIMED_OUT, or given back (bounded);
                          enqueue cases.evaluate per succeeded case
    cases.evaluate        evaluation_of; (worker scores) record_score: Result, or -> FAILED
    submissions.finalize  finalize: aggregate over the cases (case order), -> SUCCEEDED/FAILED
    (any step)            advance: progress; RUNNING -> EVALUATING when every case ran;
                          enqueue finalize when every succeeded case is scored

Every function opens its own unit of work (or takes the caller's session) and is safe to run
twice: a status check under the row lock turns a repeat into a no-op.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from backend.config import settings
from backend.datasets.importers import stem_of
from backend.db import session_scope
from backend.leaderboards import service as leaderboards
from backend.models import (
    TERMINAL_RUN_STATUSES,
    AlgorithmImage,
    Case,
    CasePolicy,
    CaseRun,
    CaseRunStatus,
    GeometryPolicy,
    Phase,
    Submission,
    SubmissionStatus,
    utcnow,
)
from backend.numbers import storable
from backend.storage import storage_for
from backend.submissions import repository as repo
from backend.submissions import state
from backend.tasks_client import enqueue_after_commit

S = SubmissionStatus
R = CaseRunStatus
ACTIVE_FOR_WORK = (S.PENDING, S.RUNNING, S.EVALUATING)


def batches(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    """``ids`` in consecutive groups of at most ``size`` (a phase's cases per container run)."""
    size = max(1, size)
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


def enqueue_start(session: Session, submission_id: int) -> None:
    enqueue_after_commit(session, "submissions.start", [submission_id])


def enqueue_runs(session: Session, submission_id: int, run_ids: Sequence[int],
                 batch_size: int) -> None:
    """One ``cases.run`` message per batch; a batch never mixes regions or input modalities
    (the container gets one ``/input/region.json`` for all its cases, as on grand-challenge)."""
    if batch_size <= 1:  # one case per container: nothing to keep apart
        groups: list[list[int]] = [list(run_ids)]
    else:
        kinds = repo.run_input_kinds(session, run_ids)
        by_kind: dict[tuple[str, str], list[int]] = defaultdict(list)
        for rid in run_ids:
            by_kind[kinds.get(rid, ("", ""))].append(rid)
        groups = [by_kind[k] for k in sorted(by_kind)]
    for group in groups:
        for batch in batches(group, batch_size):
            enqueue_after_commit(session, "cases.run", [submission_id, batch])


# ---------------------------------------------------------------- submissions.start


@dataclass(frozen=True)
class ImageToLoad:
    storage_key: str
    known_id: str | None  # the engine's id from an earlier load (None: never loaded)


def claim_start(submission_id: int) -> ImageToLoad | None:
    """PENDING -> RUNNING (a redelivered message finds RUNNING and goes on); None: nothing to
    do (the submission was cancelled or finished meanwhile)."""
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is S.PENDING:
            state.transition(s, submission_id, S.PENDING, S.RUNNING,
                             current_step="loading the algorithm image")
        elif sub.status is not S.RUNNING:
            return None
        image = s.get(AlgorithmImage, sub.image_id)
        assert image is not None
        return ImageToLoad(image.storage_key, image.docker_image_id)


def image_loaded(submission_id: int, docker_image_id: str) -> None:
    """The image is loaded: create the case runs (idempotent) and enqueue them in batches."""
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is not S.RUNNING:
            return
        image = s.get(AlgorithmImage, sub.image_id)
        phase = s.get(Phase, sub.phase_id)
        assert image is not None and phase is not None
        image.docker_image_id = docker_image_id
        runs = ensure_case_runs(s, sub)
        if not runs:
            state.transition(s, submission_id, S.RUNNING, S.FAILED,
                             error_message="The phase has no test cases; contact the organisers.")
            return
        sub.current_step = f"running cases (0 of {len(runs)} done)"
        enqueue_runs(s, submission_id, [r.id for r in runs if r.status is R.PENDING],
                     phase.batch_size)
        advance(s, sub)


def ensure_case_runs(s: Session, sub: Submission) -> list[CaseRun]:
    """One case run per case of the phase's dataset version (idempotent), by case name."""
    phase = s.get(Phase, sub.phase_id)
    assert phase is not None
    cases = ([] if phase.dataset_version_id is None
             else repo.cases_of_version(s, phase.dataset_version_id))
    existing = {r.case_id: r for r in repo.runs_of(s, sub.id)}
    runs: list[CaseRun] = []
    for case in cases:
        run = existing.get(case.id)
        if run is None:
            run = CaseRun(submission_id=sub.id, case_id=case.id)
            s.add(run)
        runs.append(run)
    sub.cases_total = len(cases)
    s.flush()
    return runs


def fail_submission(submission_id: int, message: str) -> None:
    """An active submission fails with ``message`` (a fault that ends the whole submission)."""
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status in ACTIVE_FOR_WORK:
            state.transition(s, submission_id, sub.status, S.FAILED, error_message=message,
                             current_step="failed")


# ---------------------------------------------------------------- cases.run


@dataclass(frozen=True)
class ClaimedCase:
    run_id: int
    attempt: int
    name: str
    modality: str
    region: str
    image_path: str  # relative to settings.data_dir
    mask_path: str


@dataclass(frozen=True)
class RunClaim:
    """Case runs this worker now owns (RUNNING), with what it needs to run them."""

    submission_id: int
    cases: list[ClaimedCase]
    image_ref: str  # the engine's id of the loaded image ("" if unknown)
    image_key: str  # the tarball in the image storage
    batch: bool  # the phase runs several cases per container
    time_limit_s: float  # the phase's per-case limit x cases in this run
    memory_mb: int
    cpus: float
    logs_shown: bool  # participants see the container's logs (messages may point at them)
    # Phase geometry policy 'impose': an sCT of the right size gets the input's geometry.
    impose_geometry: bool = False


GPU_MISSING = ("This phase requires a GPU, but the worker that took this case has none. "
               "The organisers need to run a GPU worker (queue 'gpu') and re-evaluate.")


def claim_runs(submission_id: int, run_ids: Iterable[int], *, has_gpu: bool) -> RunClaim | None:
    """PENDING -> RUNNING for those of ``run_ids`` still pending (a repeated message claims
    none). None: nothing to run."""
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is not S.RUNNING:
            return None
        phase = s.get(Phase, sub.phase_id)
        image = s.get(AlgorithmImage, sub.image_id)
        assert phase is not None and image is not None
        claimed: list[ClaimedCase] = []
        for rid in sorted(run_ids):
            run = state.lock_case_run(s, rid)
            if run.status is not R.PENDING or run.submission_id != submission_id:
                continue
            if phase.gpu_required and not has_gpu:
                state.move_case_run(s, rid, R.FAILED, error_message=GPU_MISSING)
                continue
            run = state.move_case_run(s, rid, R.RUNNING)
            case = s.get(Case, run.case_id)
            assert case is not None
            claimed.append(ClaimedCase(rid, run.attempts, case.name, case.modality.value,
                                       case.region, case.input_image_path, case.mask_path))
        if not claimed:
            advance(s, sub)
            return None
        sub.current_step = f"running {', '.join(c.name for c in claimed)}"[:200]
        return RunClaim(
            submission_id=submission_id, cases=claimed,
            image_ref=image.docker_image_id or "", image_key=image.storage_key,
            batch=phase.batch_size > 1,
            time_limit_s=float(phase.case_time_limit_s * len(claimed)),
            memory_mb=phase.memory_mb, cpus=phase.cpus, logs_shown=phase.show_case_logs,
            impose_geometry=phase.geometry_policy is GeometryPolicy.IMPOSE,
        )


@dataclass(frozen=True)
class CaseOutcome:
    status: CaseRunStatus  # SUCCEEDED, FAILED or TIMED_OUT
    message: str = ""
    prediction_path: str | None = None  # relative to settings.data_dir
    warning: str = ""  # shown with a succeeded case (e.g. its geometry was imposed)


@dataclass(frozen=True)
class ContainerRecord:
    exit_code: int | None = None
    duration_s: float | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class InfrastructureFault:
    """A fault of the platform under this run (Docker engine, storage that may recover): the
    cases are given back, and after the last attempt fail with ``gave_up(attempts, text)``."""

    text: str
    gave_up: Callable[[int, str], str]


def record_runs(
    claim: RunClaim,
    outcomes: Mapping[int, CaseOutcome],
    *,
    container: ContainerRecord | None = None,
    fault: InfrastructureFault | None = None,
) -> None:
    """Record what the worker found for the claimed runs; score the succeeded ones; give the
    runs of an infrastructure fault back (bounded by ``case_run_max_attempts``)."""
    record = container or ContainerRecord()
    with session_scope() as s:
        sub = state.lock_submission(s, claim.submission_id)
        phase = s.get(Phase, sub.phase_id)
        assert phase is not None
        retry: list[int] = []
        for case in claim.cases:
            run = state.lock_case_run(s, case.run_id)
            # Requeued by the reaper meanwhile (another attempt owns it): drop our outcome.
            if run.status is not R.RUNNING or run.attempts != case.attempt:
                continue
            if sub.status is S.CANCELLED:
                outcome = CaseOutcome(R.CANCELLED, "The submission was cancelled.")
            elif fault and sub.status is S.RUNNING \
                    and run.attempts < settings.case_run_max_attempts:
                state.move_case_run(s, run.id, R.PENDING)  # the next cases.run claims it
                retry.append(run.id)
                continue
            elif fault:
                outcome = CaseOutcome(R.FAILED, fault.gave_up(run.attempts, fault.text))
            else:
                outcome = outcomes[run.id]
            state.move_case_run(
                s, run.id, outcome.status, error_message=outcome.message,
                exit_code=record.exit_code, duration_s=record.duration_s,
                stdout=record.stdout, stderr=record.stderr,
                prediction_path=outcome.prediction_path, warning=outcome.warning,
            )
            if outcome.status is R.SUCCEEDED:
                enqueue_after_commit(s, "cases.evaluate", [run.id])
        enqueue_runs(s, claim.submission_id, retry, phase.batch_size)
        advance(s, sub)


def is_cancelled(submission_id: int) -> bool:
    """Whether the worker running this submission's container should stop it."""
    with session_scope() as s:
        return repo.submission_status(s, submission_id) is not S.RUNNING


# ---------------------------------------------------------------- progress


@dataclass(frozen=True)
class Progress:
    total: int  # case runs
    terminal: int  # case runs that ended
    succeeded: int
    scored: int  # succeeded case runs with their metrics

    @property
    def done(self) -> int:
        """Cases with nothing left to do (ended and, if succeeded, scored)."""
        return self.terminal - (self.succeeded - self.scored)


def progress(s: Session, submission_id: int) -> Progress:
    counts = repo.run_status_counts(s, submission_id)
    return Progress(
        total=sum(counts.values()),
        terminal=sum(n for st, n in counts.items() if st in TERMINAL_RUN_STATUSES),
        succeeded=counts.get(R.SUCCEEDED, 0),
        scored=repo.scored_count(s, submission_id),
    )


def advance(s: Session, sub: Submission) -> None:
    """Under the submission lock: update progress; RUNNING -> EVALUATING when every case ran;
    enqueue finalize when every succeeded case is scored."""
    p = progress(s, sub.id)
    sub.cases_total, sub.cases_done = p.total, p.done
    if sub.status is S.RUNNING and p.total and p.terminal == p.total:
        state.transition(s, sub.id, S.RUNNING, S.EVALUATING,
                         current_step=f"scoring ({p.done} of {p.total} cases done)")
    elif sub.status is S.RUNNING:
        sub.current_step = f"running cases ({p.done} of {p.total} done)"
    elif sub.status is S.EVALUATING:
        sub.current_step = f"scoring ({p.done} of {p.total} cases done)"
    if sub.status is S.EVALUATING and p.scored == p.succeeded:
        sub.current_step = "computing the leaderboard"
        enqueue_after_commit(s, "submissions.finalize", [sub.id])
    s.flush()


# ---------------------------------------------------------------- cases.evaluate


@dataclass(frozen=True)
class Evaluation:
    """What scoring one case needs (paths relative to settings.data_dir)."""

    case_run_id: int
    submission_id: int
    case_id: int
    case_name: str
    region: str
    profile: str
    prediction_path: str
    ground_truth_path: str
    mask_path: str
    labels_path: str | None
    plan_path: str | None


def evaluation_of(case_run_id: int) -> Evaluation | None:
    """The scoring job of a succeeded case run; None when there is none (any more)."""
    with session_scope() as s:
        run = s.get(CaseRun, case_run_id)
        if run is None or run.status is not R.SUCCEEDED or not run.prediction_path:
            return None
        sub = s.get(Submission, run.submission_id)
        assert sub is not None
        if sub.status not in (S.RUNNING, S.EVALUATING):
            return None
        case = s.get(Case, run.case_id)
        phase = s.get(Phase, sub.phase_id)
        assert case is not None and phase is not None
        return Evaluation(
            case_run_id=run.id, submission_id=sub.id, case_id=case.id, case_name=case.name,
            region=case.region, profile=phase.metric_profile, prediction_path=run.prediction_path,
            ground_truth_path=case.ground_truth_path, mask_path=case.mask_path,
            labels_path=label_map_for(case.labels_path, phase.metric_profile),
            plan_path=case.plan_path,
        )


def label_map_for(labels_path: str | None, metric_profile: str) -> str | None:
    """The case's ground-truth label map that the profile's segmenter compares with (see
    ``evaluator.profiles.label_map_stem``): the case's own when it is of that kind, else one
    of that kind stored beside it, else None (TotalSegmentator then segments the CT)."""
    from evaluator.profiles import PROFILES, label_map_stem

    spec = PROFILES.get(metric_profile)
    stem = label_map_stem(spec.segmenter if spec else None)
    if not labels_path or stem is None:
        return None
    if stem_of(posixpath.basename(labels_path)) == stem:
        return labels_path
    folder = posixpath.dirname(labels_path) + "/"
    return next((k for k in storage_for(labels_path).keys(folder)
                 if stem_of(posixpath.basename(k)) == stem), None)


def record_score(job: Evaluation, metrics: Mapping[str, Any], error: str = "") -> None:
    """The case's metrics (a retry overwrites), or the reason it could not be scored."""
    with session_scope() as s:
        sub = state.lock_submission(s, job.submission_id)
        if sub.status not in (S.RUNNING, S.EVALUATING):
            return
        run = state.lock_case_run(s, job.case_run_id)
        if run.status is not R.SUCCEEDED:
            return
        if error:
            state.move_case_run(s, run.id, R.FAILED, error_message=error)
        else:
            store_result(s, job.submission_id, job.case_id, metrics)
        advance(s, sub)


# ---------------------------------------------------------------- submissions.finalize


def finalize(submission_id: int) -> None:
    """EVALUATING -> SUCCEEDED with the aggregate over every case of the phase under its case
    policy (in case order, exact sums: the same per-case values give the same bits), or
    FAILED with the reason."""
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is not S.EVALUATING:
            return
        p = progress(s, submission_id)
        if p.terminal < p.total or p.scored < p.succeeded:
            return  # the last cases.evaluate enqueues finalize again
        rows = repo.scored_metrics(s, submission_id)  # in case order
        if not rows:
            first_error = repo.first_case_error(s, submission_id) \
                or "no case produced a valid synthetic CT"
            state.transition(s, submission_id, S.EVALUATING, S.FAILED, current_step="failed",
                             error_message=f"No case succeeded. First error: {first_error}")
            return
        phase = s.get(Phase, sub.phase_id)
        assert phase is not None
        scoring = PhaseScoring.of(s, phase)
        per_case = dict(rows)
        means, stats, error = scoring.aggregate(per_case, {})
        # Cases that take the phase's worst value: those values come from every submission,
        # and this one may have set a new worst for the phase's other incomplete ones.
        others_incomplete = scoring.uses_others \
            and repo.incomplete_aggregates(s, phase.id, len(scoring.case_names))
        others: dict[int, dict[str, dict[str, Any]]] = {}
        worst: dict[str, dict[str, float]] = {}
        if scoring.uses_others and (error is not None or filled_cases(stats)
                                    or others_incomplete):
            others = repo.phase_case_metrics(s, phase.id, [S.SUCCEEDED])  # read once
            worst = scoring.worst_values({**others, submission_id: per_case})
            means, stats, error = scoring.aggregate(per_case, worst)
        if error is not None:
            state.transition(s, submission_id, S.EVALUATING, S.FAILED, current_step="failed",
                             error_message=f"The submission is incomplete: {error}")
            return
        scoring.store(s, submission_id, means, stats)
        failed = p.total - len(rows)
        message = (f"{failed} of {p.total} cases failed; scored under the phase's "
                   f"'{scoring.policy}' policy.") if failed else ""
        state.transition(s, submission_id, S.EVALUATING, S.SUCCEEDED, current_step="done",
                         error_message=message)
        sub.cases_done = p.total
        for other_id in others_incomplete or ():  # aggregated again with the new worst
            means, stats, error = scoring.aggregate(others.get(other_id, {}), worst)
            if error is None:
                scoring.store(s, other_id, means, stats)
        leaderboards.invalidate(s, sub.phase_id)


def filled_cases(statistics: Mapping[str, Any]) -> set[str]:
    """Cases that took a worst value or a penalty for some metric."""
    filled = statistics.get("filled") or {}
    return {str(c) for cases in filled.values() for c in cases}


def store_result(s: Session, submission_id: int, case_id: int,
                 metrics: Mapping[str, Any]) -> None:
    repo.upsert_result(s, submission_id, case_id, storable(dict(metrics)))


def store_aggregate(s: Session, submission_id: int, means: Mapping[str, Any],
                    statistics: Mapping[str, Any], cases_scored: int) -> None:
    repo.upsert_aggregate(s, submission_id, storable(dict(means)), storable(dict(statistics)),
                          cases_scored)


@dataclass(frozen=True)
class PhaseScoring:
    """How a phase turns per-case metrics into a submission's aggregate: every case of the
    phase counts, under its case policy, for the metrics its leaderboard ranks."""

    phase_id: int
    case_names: tuple[str, ...]
    directions: dict[str, bool]  # the leaderboard's columns, directions from the registry
    policy: str
    penalties: dict[str, float]

    @classmethod
    def of(cls, s: Session, phase: Phase) -> PhaseScoring:
        cases = ([] if phase.dataset_version_id is None
                 else repo.cases_of_version(s, phase.dataset_version_id))
        return cls(
            phase_id=phase.id,
            case_names=tuple(c.name for c in cases),
            directions={c.metric: c.higher_is_better for c in leaderboards.columns_of(phase)},
            policy=CasePolicy(phase.case_policy).value,
            penalties={str(k): float(v) for k, v in (phase.case_penalties or {}).items()},
        )

    @property
    def uses_others(self) -> bool:
        """Whether a failed case's value may come from the phase's other submissions."""
        return self.policy == CasePolicy.WORST.value \
            and not set(self.directions) <= set(self.penalties)

    def worst_values(self, per_sub: Mapping[int, Mapping[str, Any]],
                     ) -> dict[str, dict[str, float]]:
        """Per case and metric, the worst value among these submissions' per-case metrics."""
        from evaluator.aggregation import worst_values

        return worst_values((per_sub[k] for k in sorted(per_sub)), self.directions)

    def aggregate(self, per_case: Mapping[str, Mapping[str, Any]],
                  worst: Mapping[str, Mapping[str, float]],
                  ) -> tuple[dict[str, float], dict[str, object], str | None]:
        from evaluator.aggregation import aggregate_submission

        return aggregate_submission(per_case, self.case_names, self.directions, self.policy,
                                    worst=worst, penalties=self.penalties)

    def store(self, s: Session, submission_id: int, means: Mapping[str, Any],
              stats: Mapping[str, Any]) -> None:
        """The aggregate; cases scored = the phase's cases less those that were filled."""
        store_aggregate(s, submission_id, means, stats,
                        len(self.case_names) - len(filled_cases(stats)))


# ---------------------------------------------------------------- the reaper's rules


@dataclass(frozen=True)
class LiveWork:
    """What the live workers are doing now (from ``inspect().active()``)."""

    case_runs: frozenset[int]  # case runs inside a running cases.run
    submissions: frozenset[int]  # submissions with a running start/run/finalize


@dataclass
class ReapReport:
    requeued_runs: list[int] = field(default_factory=list)
    failed_runs: list[int] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    containers_removed: int = 0


def lost_worker_message(attempts: int) -> str:
    return (f"The worker running this case was lost {attempts} times; the case was given up. "
            "If it keeps happening, the algorithm may crash the host.")


def reap(live: LiveWork | None, *, grace_s: float, slack_s: float) -> ReapReport:
    """Work a lost worker left behind: a RUNNING case run that no live task owns (older than
    ``grace_s``; ``live`` None = no worker answered, so only the time rule applies) or older
    than its own time limit plus ``slack_s`` goes back to PENDING and is enqueued again (up to
    ``case_run_max_attempts``, then it fails with a reason). Submissions that have not moved for
    ``grace_s`` get their next step re-sent (every step is idempotent)."""
    report = ReapReport()
    now, grace = utcnow(), timedelta(seconds=grace_s)
    with session_scope() as s:
        requeue: dict[int, list[int]] = defaultdict(list)
        batch_size: dict[int, int] = {}
        failed_subs: set[int] = set()
        for run_id, sub_id, started_at, phase in repo.running_case_runs(s):
            age = now - (started_at or now)
            hard = timedelta(seconds=phase.case_time_limit_s * phase.batch_size + slack_s)
            orphaned = live is not None and run_id not in live.case_runs and age > grace
            if not (orphaned or age > hard):
                continue
            run = state.lock_case_run(s, run_id)
            if run.status is not R.RUNNING:
                continue
            if run.attempts >= settings.case_run_max_attempts:
                state.move_case_run(s, run_id, R.FAILED,
                                    error_message=lost_worker_message(run.attempts))
                report.failed_runs.append(run_id)
                failed_subs.add(sub_id)
            else:
                state.move_case_run(s, run_id, R.PENDING)
                requeue[sub_id].append(run_id)
                batch_size[sub_id] = phase.batch_size
                report.requeued_runs.append(run_id)
        for sub_id, run_ids in requeue.items():
            enqueue_runs(s, sub_id, run_ids, batch_size[sub_id])
        for sub_id in sorted(failed_subs):  # the last case may just have failed: move it on
            advance(s, state.lock_submission(s, sub_id))
        busy = live.submissions if live is not None else frozenset()
        _resend_stuck(s, now - grace, busy, report)
    return report


def _resend_stuck(s: Session, before: datetime, busy: Collection[int],
                  report: ReapReport) -> None:
    """Re-send the next step of submissions that have not moved since ``before``."""
    for sub in repo.unmoved_submissions(s, before):
        if sub.id in busy:
            continue
        runs = repo.runs_of(s, sub.id)
        if sub.status is S.PENDING or (sub.status is S.RUNNING and not runs):
            enqueue_start(s, sub.id)
            report.resent.append(f"start {sub.id}")
            continue
        waiting = [r.id for r in runs if r.status is R.PENDING]
        if sub.status is S.RUNNING and waiting:
            # Their message may sit unacked with a dead worker until the visibility timeout.
            phase = s.get(Phase, sub.phase_id)
            enqueue_runs(s, sub.id, waiting, phase.batch_size if phase else 1)
            report.resent.append(f"run {sub.id}: {waiting}")
        scored = repo.scored_case_ids(s, sub.id)
        for run in runs:
            if run.status is R.SUCCEEDED and run.case_id not in scored:
                enqueue_after_commit(s, "cases.evaluate", [run.id])
                report.resent.append(f"evaluate {run.id}")
        if sub.status is S.EVALUATING:
            enqueue_after_commit(s, "submissions.finalize", [sub.id])
            report.resent.append(f"finalize {sub.id}")
        # Touch it so a slow queue does not get the same messages every interval.
        sub.updated_at = utcnow()


# ---------------------------------------------------------------- organiser actions


def cancel_open_runs(s: Session, submission_id: int) -> None:
    """A cancelled submission's pending and running case runs are cancelled (the worker
    running one stops its container when it next checks ``is_cancelled``)."""
    for run_id in repo.open_case_run_ids(s, submission_id):
        state.move_case_run(s, run_id, R.CANCELLED)

