"""The pipeline's steps. Each one locks its row, checks the status it expects, does one step,
commits, and enqueues the next step after commit (``enqueue_after_commit``). Every step is
safe to run twice: a status check or a unique constraint turns a repeat into a no-op.

    submissions.start  PENDING -> RUNNING, load image, create case runs, enqueue cases.run
    cases.run          case runs PENDING -> RUNNING -> SUCCEEDED/FAILED/TIMED_OUT (container)
    cases.evaluate     score one SUCCEEDED case run -> Result (upsert)
    submissions.finalize  EVALUATING -> SUCCEEDED/FAILED: aggregate, re-rank
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.config import settings
from backend.db import session_scope
from backend.models import (
    AlgorithmImage,
    Case,
    CaseRun,
    CaseRunStatus,
    Phase,
    Result,
    Submission,
    SubmissionStatus,
)
from backend.storage import StorageUnavailableError, free_bytes, is_disk_full
from backend.submissions import state
from backend.tasks_client import enqueue_after_commit
from worker import sandbox
from worker.provision import (
    CaseInput,
    OutputError,
    find_outputs,
    provision_inputs,
    validate_output,
)

log = logging.getLogger(__name__)

S = SubmissionStatus
R = CaseRunStatus
TERMINAL_RUN = frozenset({R.SUCCEEDED, R.FAILED, R.TIMED_OUT, R.CANCELLED})
Q_GPU, Q_EVAL = "gpu", "eval"


def _now_step(session: Session, sub: Submission, step: str) -> None:
    sub.current_step = step[:200]
    session.flush()


# ---------------------------------------------------------------- submissions.start


def _image_tarball(storage_key: str) -> Path:
    """The image's tarball as a local file (fetched from S3 into the cache when stored there).
    Raises StorageUnavailableError (may pass) or FileNotFoundError (not in the storage)."""
    from backend.storage import get_storage

    return get_storage().local_copy(storage_key, settings.data_dir / "cache" / "images")


def _gave_up(what: str, check: str, given_up: str = "the case") -> Callable[[int, str], str]:
    """The message for an infrastructure fault that outlasted its retries."""
    def message(attempts: int, fault: str) -> str:
        return (f"{what}, {attempts} times; {given_up} was given up. This is not a fault of the "
                f"algorithm: the organisers need to check {check} and re-evaluate. Last error: "
                f"{fault}")
    return message


_storage_gave_up = _gave_up("The algorithm image could not be read from the image storage",
                            "the image storage", "the submission")
_inputs_gave_up = _gave_up("The inputs of this case could not be prepared", "the worker's storage")
_predictions_gave_up = _gave_up("The prediction could not be stored", "the server's storage")
_engine_gave_up = _gave_up("The Docker engine failed while running this case",
                           "the worker's Docker engine")


def _missing_image(exc: OSError) -> str:
    return (f"The algorithm image is missing from the image storage ({exc.strerror}); this is "
            "not a fault of the algorithm: the organisers need to restore it and re-evaluate.")


def start_submission(submission_id: int) -> None:
    # Step 1: claim it (PENDING -> RUNNING). A redelivered message finds RUNNING and goes on.
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is S.PENDING:
            state.transition(s, submission_id, S.PENDING, S.RUNNING,
                             current_step="loading the algorithm image")
        elif sub.status is not S.RUNNING:
            log.info("submission %s is %s; start skipped", submission_id, sub.status.value)
            return
        image = s.get(AlgorithmImage, sub.image_id)
        assert image is not None
        storage_key, known_id = image.storage_key, image.docker_image_id
    # Step 2: fetch and load the image outside any transaction (minutes for big images).
    image_id = _load_image(submission_id, storage_key, known_id)
    if image_id is None:
        return
    # Step 3: case runs (idempotent: unique per submission and case) and their tasks.
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is not S.RUNNING:
            return
        image = s.get(AlgorithmImage, sub.image_id)
        assert image is not None
        image.docker_image_id = image_id
        phase = s.get(Phase, sub.phase_id)
        assert phase is not None
        runs = state.ensure_case_runs(s, sub)
        if not runs:
            state.transition(s, submission_id, S.RUNNING, S.FAILED,
                             error_message="The phase has no test cases; contact the organisers.")
            return
        pending = [r.id for r in runs if r.status is R.PENDING]
        _now_step(s, sub, f"running cases (0 of {len(runs)} done)")
        for i in range(0, len(pending), phase.batch_size):
            enqueue_run(s, submission_id, pending[i : i + phase.batch_size], phase)
        advance(s, sub)


def _load_image(submission_id: int, storage_key: str, known_id: str | None) -> str | None:
    """The loaded image's id; an unreachable image storage and a restarting Docker engine are
    waited for (bounded). None: the submission was failed with the reason."""
    for attempt in range(1, settings.case_run_max_attempts + 1):
        try:
            tarball = _image_tarball(storage_key)
        except StorageUnavailableError as exc:
            if attempt == settings.case_run_max_attempts:
                _fail_submission(submission_id, _storage_gave_up(attempt, str(exc.strerror)))
                return None
            log.warning("submission %s: image storage fault, trying again: %s",
                        submission_id, exc.strerror)
            time.sleep(PROVISION_RETRY_PAUSE_S)
            continue
        except FileNotFoundError as exc:
            _fail_submission(submission_id, _missing_image(exc))
            return None
        try:
            return sandbox.load_image(tarball, expected_id=known_id)
        except sandbox.EngineError as exc:
            if attempt == settings.case_run_max_attempts \
                    or not sandbox.wait_for_engine(settings.sandbox_engine_wait_s):
                _fail_submission(submission_id, (
                    "The Docker engine on the worker could not be reached, so the algorithm "
                    "image could not be loaded. This is not a fault of the algorithm: the "
                    f"organisers need to check the worker's Docker engine and re-evaluate. {exc}"))
                return None
            log.warning("submission %s: Docker engine fault, loading again: %s",
                        submission_id, exc)
        except (sandbox.SandboxError, OSError) as exc:
            _fail_submission(submission_id, f"The algorithm image could not be loaded: {exc}")
            return None
    return None


def enqueue_run(session: Session, submission_id: int, run_ids: list[int], phase: Phase) -> None:
    enqueue_after_commit(session, "cases.run", [submission_id, run_ids], queue=Q_GPU)


def _fail_submission(submission_id: int, message: str) -> None:
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status in (S.PENDING, S.RUNNING, S.EVALUATING):
            state.transition(s, submission_id, sub.status, S.FAILED, error_message=message,
                             current_step="failed")


# ---------------------------------------------------------------- cases.run


def _limits(phase: Phase, n_cases: int, gpu: str | None) -> sandbox.SandboxLimits:
    return sandbox.SandboxLimits(
        time_limit_s=float(phase.case_time_limit_s * n_cases),
        memory_bytes=phase.memory_mb * 1024**2,
        cpus=phase.cpus,
        pids_limit=settings.sandbox_pids_limit,
        shm_bytes=settings.sandbox_shm_mb * 1024**2,
        tmp_bytes=settings.sandbox_tmp_mb * 1024**2,
        gpu_device=gpu,
        log_lines=settings.sandbox_log_lines,
        log_bytes=settings.log_capture_bytes,
        output_bytes=settings.sandbox_output_mb * 1024**2,
        output_files=settings.sandbox_output_files,
    )


def _case_input(case: Case) -> CaseInput:
    return CaseInput(
        name=case.name,
        modality=case.modality.value,
        region=case.region,
        image_path=settings.data_dir / case.input_image_path,
        mask_path=settings.data_dir / case.mask_path,
    )


def run_cases(
    submission_id: int, run_ids: Sequence[int], *, worker_name: str, gpu: str | None
) -> dict[str, float]:
    """Run one container on these case runs (one case, or a batch). Returns step timings."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # Claim the runs that are still PENDING (a repeat of this message claims none).
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is not S.RUNNING:
            return timings
        phase = s.get(Phase, sub.phase_id)
        image = s.get(AlgorithmImage, sub.image_id)
        assert phase is not None and image is not None
        claimed: dict[int, tuple[int, CaseInput]] = {}
        for rid in sorted(run_ids):
            run = state.lock_case_run(s, rid)
            if run.status is not R.PENDING or run.submission_id != submission_id:
                continue
            case = s.get(Case, run.case_id)
            assert case is not None
            if phase.gpu_required and gpu is None:
                state.finish_case_run(s, rid, R.FAILED, error_message=(
                    "This phase requires a GPU, but the worker that took this case has none. "
                    "The organisers need to run a GPU worker (queue 'gpu') and re-evaluate."))
                continue
            run = state.start_case_run(s, rid)
            claimed[rid] = (run.attempts, _case_input(case))
        if not claimed:
            advance(s, sub)
            return timings
        limits = _limits(phase, len(claimed), gpu)
        image_ref, image_key = image.docker_image_id or "", image.storage_key
        batch = phase.batch_size > 1
        names = ", ".join(c.name for _, c in claimed.values())
        _now_step(s, sub, f"running {names}")
    timings["claim"] = time.perf_counter() - t0

    outcomes: dict[int, tuple[CaseRunStatus, str, str | None]] = {}
    result: sandbox.SandboxResult | None = None
    # An infrastructure fault under this run (the Docker engine, or storage that may recover):
    # the cases are given back (attempts counted) and fail with ``gave_up`` after the last.
    fault, gave_up = "", _engine_gave_up
    engine_fault = False
    run_dir: Path | None = None
    try:
        t1 = time.perf_counter()
        try:
            run_dir = _provision(submission_id, [c for _, c in claimed.values()])
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            # Never left to the reaper: a full disk or a broken input fails the cases now with
            # the reason; an I/O error that may pass is retried like an engine fault.
            if is_disk_full(exc):
                log.warning("submission %s: inputs not provisioned: %s", submission_id, exc)
                outcomes = {rid: (R.FAILED, INPUTS_STORAGE_FULL, None) for rid in claimed}
            elif is_transient_io_error(exc):
                log.warning("submission %s: inputs not provisioned (will retry): %s",
                            submission_id, exc)
                fault, gave_up = describe_error(exc), _inputs_gave_up
            else:
                log.exception("submission %s: inputs not provisioned", submission_id)
                outcomes = {rid: (R.FAILED, inputs_failed(exc), None) for rid in claimed}
        timings["provision"] = time.perf_counter() - t1
        labels = {
            sandbox.LABEL_WORKER: worker_name,
            sandbox.LABEL_SUBMISSION: str(submission_id),
            sandbox.LABEL_CASE_RUNS: ",".join(str(r) for r in claimed),
        }
        if run_dir is not None:
            try:
                # This GPU host may not be the one that ran submissions.start: load if missing.
                try:
                    tarball = _image_tarball(image_key)
                except FileNotFoundError as exc:
                    raise sandbox.SandboxError(_missing_image(exc)) from exc
                image_ref = sandbox.load_image(tarball, expected_id=image_ref or None)
                result = sandbox.run_container(
                    image_ref, input_dir=run_dir / "input", output_dir=run_dir / "output",
                    limits=limits, labels=labels,
                    should_stop=_cancel_check(submission_id),
                    engine_wait_s=settings.sandbox_engine_wait_s,
                )
            except sandbox.EngineError as exc:
                log.warning("submission %s: Docker engine fault: %s", submission_id, exc)
                fault, engine_fault = str(exc), True
            except StorageUnavailableError as exc:  # the cases are given back (bounded)
                log.warning("submission %s: image storage fault: %s", submission_id,
                            exc.strerror)
                fault, gave_up = str(exc.strerror), _storage_gave_up
            except sandbox.SandboxError as exc:
                for rid in claimed:
                    outcomes[rid] = (R.FAILED, str(exc), None)
            else:
                timings.update({f"docker_{k}": v for k, v in result.timings.items()})
                t2 = time.perf_counter()
                try:
                    outcomes = _collect(submission_id, claimed, result, run_dir / "output",
                                        batch)
                except PredictionStorageError as exc:
                    log.warning("submission %s: predictions not stored (will retry): %s",
                                submission_id, exc)
                    fault, gave_up = str(exc), _predictions_gave_up
                timings["validate"] = time.perf_counter() - t2
    finally:
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
    if engine_fault:
        # Hand the cases out again only once the engine answers (bounded; attempts count).
        sandbox.wait_for_engine(settings.sandbox_engine_wait_s)
    elif fault:
        time.sleep(PROVISION_RETRY_PAUSE_S)  # give a passing storage fault a moment

    t3 = time.perf_counter()
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        retry: list[int] = []
        for rid, (attempt, _) in claimed.items():
            run = state.lock_case_run(s, rid)
            # Requeued by the reaper meanwhile (another attempt owns it): drop our outcome.
            if run.status is not R.RUNNING or run.attempts != attempt:
                continue
            if sub.status is S.CANCELLED:
                status, message, prediction = R.CANCELLED, "The submission was cancelled.", None
            elif (fault and sub.status is S.RUNNING
                  and run.attempts < settings.case_run_max_attempts):
                run.status = R.PENDING  # the next cases.run claims it (attempts + 1)
                retry.append(rid)
                continue
            elif fault:
                status, message, prediction = R.FAILED, gave_up(run.attempts, fault), None
            else:
                status, message, prediction = outcomes[rid]
            state.finish_case_run(
                s, rid, status,
                exit_code=result.exit_code if result else None,
                duration_s=result.duration_s if result else None,
                stdout=result.stdout if result else "",
                stderr=result.stderr if result else "",
                error_message=message,
                prediction_path=prediction,
            )
            if status is R.SUCCEEDED:
                enqueue_after_commit(s, "cases.evaluate", [rid], queue=Q_EVAL)
        if retry:
            enqueue_run(s, submission_id, retry, phase)
        advance(s, sub)
    timings["record"] = time.perf_counter() - t3
    timings["algorithm"] = result.duration_s if result else 0.0
    return timings


def _provision(submission_id: int, cases: list[CaseInput]) -> Path:
    """A fresh run directory under ``data_dir/work`` with ``input/`` filled; nothing is left
    behind when this fails (e.g. ENOSPC, raised as OSError)."""
    work = settings.data_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"sub{submission_id}-", dir=work))
    try:
        provision_inputs(run_dir / "input", cases, settings.data_dir / "cache" / "uncompressed")
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


INPUTS_STORAGE_FULL = (
    "The server's storage is full: the inputs of this case could not be prepared. This is not "
    "a fault of the algorithm; the organisers need to free space and re-evaluate."
)


# Errors of the storage under the data dir that may pass (a network filesystem's hiccup, a
# process or system out of file handles or memory): the case is tried again, bounded.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN,
                              errno.EBUSY, errno.EINTR, errno.ENFILE, errno.EMFILE,
                              errno.ENOMEM})
PROVISION_RETRY_PAUSE_S = 5.0


def is_transient_io_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def describe_error(exc: BaseException) -> str:
    """One line for a participant: what failed, with paths under the data dir shown relative
    to it (other paths by file name only)."""
    if isinstance(exc, OSError) and exc.strerror:
        if not exc.filename:
            return str(exc.strerror)
        path = Path(str(exc.filename))
        inside = path.is_relative_to(settings.data_dir)
        return f"{exc.strerror} ({path.relative_to(settings.data_dir) if inside else path.name})"
    text = " ".join(str(exc).split())
    text = text.split("sitk::ERROR: ", 1)[-1]  # SimpleITK prefixes its own source location
    text = text.replace(f"{settings.data_dir}/", "")
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def inputs_failed(exc: BaseException) -> str:
    return (f"The inputs of this case could not be prepared: {describe_error(exc)}. This is "
            "not a fault of the algorithm; the organisers need to check the dataset's files "
            "(and the worker's storage) and re-evaluate.")


# Below this many free bytes on the work filesystem after a failed run, the algorithm ran out
# of room before its /output cap: the server's storage is to blame, not the algorithm.
OUTPUT_FULL_MARGIN = 1024 * 1024


def _output_storage_full(output_dir: Path) -> str:
    """The reason to give when the server's disk filled up under /output (the algorithm had
    written less than its cap), else ""."""
    try:
        if free_bytes(output_dir) >= OUTPUT_FULL_MARGIN:
            return ""
        written = sum(p.stat().st_size for p in output_dir.rglob("*") if p.is_file())
    except OSError:
        return ""
    cap = settings.sandbox_output_mb * 1024**2
    if written >= cap:
        return ""  # the algorithm's own doing: the sandbox's cap message stands
    log.error("the work filesystem under %s is full (%d bytes of output written)", output_dir,
              written)
    return (f"The server's storage filled up while the algorithm wrote its output "
            f"({written / 1024**2:.1f} MB written; the limit is {settings.sandbox_output_mb} "
            "MB). This is not a fault of the algorithm; the organisers need to free space and "
            "re-evaluate.")


class PredictionStorageError(Exception):
    """Storing the predictions hit an I/O error that may pass (see TRANSIENT_ERRNOS)."""


def _cancel_check(submission_id: int, every_s: float = 2.0) -> Callable[[], bool]:
    """A should_stop for the sandbox that asks the database at most every ``every_s``."""
    last = [time.monotonic()]

    def check() -> bool:
        now = time.monotonic()
        if now - last[0] < every_s:
            return False
        last[0] = now
        return _is_cancelled(submission_id)

    return check


def _is_cancelled(submission_id: int) -> bool:
    with session_scope() as s:
        status = s.scalar(select(Submission.status).where(Submission.id == submission_id))
    return status is not S.RUNNING


def _collect(
    submission_id: int,
    claimed: dict[int, tuple[int, CaseInput]],
    result: sandbox.SandboxResult,
    output_dir: Path,
    batch: bool,
) -> dict[int, tuple[CaseRunStatus, str, str | None]]:
    outcomes: dict[int, tuple[CaseRunStatus, str, str | None]] = {}
    full = _output_storage_full(output_dir)
    if not result.ok:
        status = R.TIMED_OUT if result.timed_out else R.FAILED
        return {rid: (status, full or result.error_message, None) for rid in claimed}
    found = find_outputs(output_dir)
    target_dir = settings.predictions_dir / str(submission_id)
    for rid, (_, case) in claimed.items():
        try:
            sct = validate_output(case, found.get(case.name, []), batch)
        except OutputError as exc:
            outcomes[rid] = (R.FAILED, full or str(exc), None)
            continue
        target = target_dir / f"{case.name}{''.join(sct.suffixes) or '.mha'}"
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sct, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)  # no partial prediction is left behind
            if is_transient_io_error(exc):  # the cases are given back (bounded)
                raise PredictionStorageError(describe_error(exc)) from exc
            log.error("submission %s: prediction of %s not stored: %s", submission_id,
                      case.name, exc)
            outcomes[rid] = (R.FAILED, (
                "The server's storage is full: the prediction could not be stored. This is "
                "not a fault of the algorithm; the organisers need to free space and "
                "re-evaluate.") if is_disk_full(exc) else (
                f"The prediction could not be stored ({describe_error(exc)}). This is not a "
                "fault of the algorithm; the organisers need to check the server's storage "
                "and re-evaluate."), None)
            continue
        outcomes[rid] = (R.SUCCEEDED, "", str(target.relative_to(settings.data_dir)))
    return outcomes


# ---------------------------------------------------------------- progress and advancing


def _progress(s: Session, submission_id: int) -> tuple[int, int, int, int]:
    """(total runs, terminal runs, succeeded runs, results) of a submission."""
    rows = s.execute(
        select(CaseRun.status, func.count()).where(CaseRun.submission_id == submission_id)
        .group_by(CaseRun.status)
    ).all()
    counts = {status: n for status, n in rows}
    total = sum(counts.values())
    terminal = sum(n for st, n in counts.items() if st in TERMINAL_RUN)
    results = s.scalar(
        select(func.count()).select_from(Result)
        .join(CaseRun, (CaseRun.submission_id == Result.submission_id)
              & (CaseRun.case_id == Result.case_id))
        .where(Result.submission_id == submission_id, CaseRun.status == R.SUCCEEDED)
    ) or 0
    return total, terminal, counts.get(R.SUCCEEDED, 0), int(results)


def advance(s: Session, sub: Submission) -> None:
    """Under the submission lock: update progress; RUNNING -> EVALUATING when every case ran;
    enqueue finalize when every succeeded case is scored."""
    total, terminal, succeeded, scored = _progress(s, sub.id)
    done = terminal - (succeeded - scored)
    sub.cases_total = total
    sub.cases_done = done
    if sub.status is S.RUNNING and total and terminal == total:
        state.transition(s, sub.id, S.RUNNING, S.EVALUATING,
                         current_step=f"scoring ({done} of {total} cases done)")
    elif sub.status is S.RUNNING:
        sub.current_step = f"running cases ({done} of {total} done)"
    elif sub.status is S.EVALUATING:
        sub.current_step = f"scoring ({done} of {total} cases done)"
    if sub.status is S.EVALUATING and scored == succeeded:
        sub.current_step = "computing the leaderboard"
        enqueue_after_commit(s, "submissions.finalize", [sub.id], queue=Q_EVAL)
    s.flush()


# ---------------------------------------------------------------- cases.evaluate


def eval_device() -> str:
    """The torch device the metrics run on (``settings.eval_device``; "auto": CUDA if seen)."""
    if settings.eval_device != "auto":
        return settings.eval_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _score(case: Case, prediction: Path, profile: str) -> dict[str, Any]:
    from evaluator.scoring import score_case

    device = eval_device()
    metrics: dict[str, Any] = dict(score_case(
        settings.data_dir / case.ground_truth_path,
        prediction,
        settings.data_dir / case.mask_path,
        profile,
        labels_path=settings.data_dir / case.labels_path if case.labels_path else None,
        device=device,
    ))
    if case.plan_path:
        try:
            dose_metrics_for_case = importlib.import_module("evaluator.dose").dose_metrics_for_case
        except (ImportError, AttributeError):  # the optional dose extra is not installed
            return metrics
        plan = settings.data_dir / case.plan_path
        try:
            # The CT dose is computed once per case and cached beside the predictions.
            metrics.update(dose_metrics_for_case(
                plan.parent, prediction, cache_dir=settings.data_dir / "cache" / "dose",
                device=device))
        except Exception as exc:  # dose is best-effort: never lose the image metrics
            log.warning("dose metrics failed for %s: %s", case.name, exc)
            metrics["dose_error"] = str(exc)[:500]
    return metrics


def evaluate_case(case_run_id: int) -> None:
    with session_scope() as s:
        run = s.get(CaseRun, case_run_id)
        if run is None or run.status is not R.SUCCEEDED or not run.prediction_path:
            return
        sub = s.get(Submission, run.submission_id)
        assert sub is not None
        if sub.status not in (S.RUNNING, S.EVALUATING):
            return
        case = s.get(Case, run.case_id)
        phase = s.get(Phase, sub.phase_id)
        assert case is not None and phase is not None
        prediction, profile = settings.data_dir / run.prediction_path, phase.metric_profile
        submission_id, case_id = sub.id, case.id
    error = ""
    metrics: dict[str, Any] = {}
    try:
        metrics = _score(case, prediction, profile)
    except Exception as exc:  # the participant sees why their case has no score
        from evaluator.errors import EvaluationInputError

        if not isinstance(exc, EvaluationInputError | OSError | ValueError | RuntimeError):
            raise
        error = f"The synthetic CT could not be scored: {exc}"
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status not in (S.RUNNING, S.EVALUATING):
            return
        run = state.lock_case_run(s, case_run_id)
        if run.status is not R.SUCCEEDED:
            return
        if error:
            run.status, run.error_message = R.FAILED, error
        else:
            state.record_case_result(s, submission_id, case_id, metrics)
        s.flush()
        advance(s, sub)


# ---------------------------------------------------------------- submissions.finalize


def finalize_submission(submission_id: int) -> None:
    with session_scope() as s:
        sub = state.lock_submission(s, submission_id)
        if sub.status is not S.EVALUATING:
            return
        total, terminal, succeeded, scored = _progress(s, submission_id)
        if terminal < total or scored < succeeded:
            return  # the last cases.evaluate enqueues finalize again
        rows = s.execute(
            select(Result.metrics).join(
                CaseRun, (CaseRun.submission_id == Result.submission_id)
                & (CaseRun.case_id == Result.case_id))
            .where(Result.submission_id == submission_id, CaseRun.status == R.SUCCEEDED)
        ).scalars().all()
        if not rows:
            first_error = s.scalar(
                select(CaseRun.error_message).where(CaseRun.submission_id == submission_id,
                                                    CaseRun.error_message != "")
                .order_by(CaseRun.id).limit(1)) or "no case produced a valid synthetic CT"
            state.transition(s, submission_id, S.EVALUATING, S.FAILED, current_step="failed",
                             error_message=f"No case succeeded. First error: {first_error}")
            return
        from evaluator.ranking import aggregate

        names = sorted({k for m in rows for k, v in m.items() if isinstance(v, int | float)})
        agg = {k: aggregate(m.get(k) for m in rows) for k in names}
        means = {k: v["mean"] for k, v in agg.items()}
        # A case that failed counts against the submission: the aggregate knows how many.
        stats = {"per_metric": agg, "cases_total": total, "cases_failed": total - len(rows)}
        state.record_aggregate(s, submission_id, means, stats, cases_scored=len(rows))
        message = "" if len(rows) == total else f"{total - len(rows)} of {total} cases failed."
        state.transition(s, submission_id, S.EVALUATING, S.SUCCEEDED, current_step="done",
                         error_message=message)
        sub.cases_done = total
        _rerank(s, sub.phase_id)


def _rerank(s: Session, phase_id: int) -> None:
    """Leaderboards rank on read from AggregateResult; a stored ranking is refreshed here."""
    try:
        from backend.leaderboards import service as leaderboards
    except ImportError:
        return
    rerank = getattr(leaderboards, "rerank_phase", None)
    if rerank is not None:
        rerank(s, phase_id)
