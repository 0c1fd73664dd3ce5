"""The pipeline's I/O: load the algorithm image, provision ``/input``, run the sandbox,
validate and store its output, compute the metrics. Every decision (claiming, recording, what
comes next, retries) is asked of ``backend.submissions.pipeline``.

    submissions.start  claim, load the image, let the pipeline create and enqueue the case runs
    cases.run          claim case runs, run one container on them, record the outcomes
    cases.evaluate     score one succeeded case run
    submissions.finalize  the pipeline aggregates and finishes the submission
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from backend import object_cache
from backend.config import settings
from backend.models import CaseRunStatus
from backend.storage import StorageUnavailableError, data_storage, free_bytes, is_disk_full
from backend.submissions import pipeline
from backend.submissions.pipeline import (
    CaseOutcome,
    ClaimedCase,
    ContainerRecord,
    InfrastructureFault,
    RunClaim,
)
from worker import sandbox
from worker.provision import (
    CaseInput,
    OutputError,
    check_output,
    find_outputs,
    provision_inputs,
    store_output,
)

log = logging.getLogger(__name__)

R = CaseRunStatus


# ---------------------------------------------------------------- submissions.start


def _image_tarball(storage_key: str) -> contextlib.AbstractContextManager[Path]:
    """The image's tarball as a local file (from this host's object cache when stored in S3).
    Raises StorageUnavailableError (may pass) or FileNotFoundError (not in the storage)."""
    from backend.storage import get_storage

    return object_cache.local_file(storage_key, get_storage())


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
    job = pipeline.claim_start(submission_id)
    if job is None:
        log.info("submission %s is no longer waiting to start; start skipped", submission_id)
        return
    # Fetch and load the image outside any transaction (minutes for big images).
    image_id = _load_image(submission_id, job.storage_key, job.known_id)
    if image_id is not None:
        pipeline.image_loaded(submission_id, image_id)


def _load_image(submission_id: int, storage_key: str, known_id: str | None) -> str | None:
    """The loaded image's id; an unreachable image storage and a restarting Docker engine are
    waited for (bounded). None: the submission was failed with the reason."""
    for attempt in range(1, settings.case_run_max_attempts + 1):
        try:
            if known_id and sandbox.has_image(known_id):
                return known_id  # loaded on this engine before: no fetch
            with _image_tarball(storage_key) as tarball:
                return sandbox.load_image(tarball, expected_id=known_id)
        except StorageUnavailableError as exc:
            if attempt == settings.case_run_max_attempts:
                pipeline.fail_submission(submission_id,
                                         _storage_gave_up(attempt, str(exc.strerror)))
                return None
            log.warning("submission %s: image storage fault, trying again: %s",
                        submission_id, exc.strerror)
            time.sleep(PROVISION_RETRY_PAUSE_S)
            continue
        except FileNotFoundError as exc:
            pipeline.fail_submission(submission_id, _missing_image(exc))
            return None
        except sandbox.EngineError as exc:
            if attempt == settings.case_run_max_attempts \
                    or not sandbox.wait_for_engine(settings.sandbox_engine_wait_s):
                pipeline.fail_submission(submission_id, (
                    "The Docker engine on the worker could not be reached, so the algorithm "
                    "image could not be loaded. This is not a fault of the algorithm: the "
                    f"organisers need to check the worker's Docker engine and re-evaluate. {exc}"))
                return None
            log.warning("submission %s: Docker engine fault, loading again: %s",
                        submission_id, exc)
        except (sandbox.SandboxError, OSError) as exc:
            pipeline.fail_submission(submission_id,
                                     f"The algorithm image could not be loaded: {exc}")
            return None
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # never left 'loading': the submission says what went wrong
            log.exception("submission %s: image not loaded", submission_id)
            pipeline.fail_submission(submission_id, (
                f"The algorithm image could not be loaded ({type(exc).__name__}: "
                f"{str(exc)[:300]}). This is likely not a fault of the algorithm: the "
                "organisers need to check the worker's log and re-evaluate."))
            return None
    return None


# ---------------------------------------------------------------- cases.run


def _limits(claim: RunClaim, gpu: str | None) -> sandbox.SandboxLimits:
    return sandbox.SandboxLimits(
        time_limit_s=claim.time_limit_s,
        memory_bytes=claim.memory_mb * 1024**2,
        cpus=claim.cpus,
        pids_limit=settings.sandbox_pids_limit,
        shm_bytes=settings.sandbox_shm_mb * 1024**2,
        tmp_bytes=settings.sandbox_tmp_mb * 1024**2,
        gpu_device=gpu,
        log_lines=settings.sandbox_log_lines,
        log_bytes=settings.log_capture_bytes,
        output_bytes=settings.sandbox_output_mb * 1024**2,
        output_files=settings.sandbox_output_files,
        logs_shown=claim.logs_shown,
    )


def _case_input(case: ClaimedCase, files: contextlib.ExitStack) -> CaseInput:
    """The case with its input files local (fetched into this host's object cache when the
    data lives in S3; held until ``files`` closes)."""
    return CaseInput(
        name=case.name,
        modality=case.modality,
        region=case.region,
        image_path=files.enter_context(object_cache.local_file(case.image_path)),
        mask_path=files.enter_context(object_cache.local_file(case.mask_path)),
    )


Outcomes = dict[int, CaseOutcome]


def run_cases(
    submission_id: int, run_ids: list[int], *, worker_name: str, gpu: str | None
) -> dict[str, float]:
    """Run one container on these case runs (one case, or a batch). Returns step timings."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    claim = pipeline.claim_runs(submission_id, run_ids, has_gpu=gpu is not None)
    timings["claim"] = time.perf_counter() - t0
    if claim is None:
        return timings
    outcomes: Outcomes = {}
    result: sandbox.SandboxResult | None = None
    fault: InfrastructureFault | None = None
    engine_fault = False
    run_dir: Path | None = None
    files = contextlib.ExitStack()
    inputs: dict[int, CaseInput] = {}
    try:
        t1 = time.perf_counter()
        try:
            inputs = {c.run_id: _case_input(c, files) for c in claim.cases}
            run_dir = _provision(submission_id, list(inputs.values()))
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:
            # Never left to the reaper: a full disk or a broken input fails the cases now with
            # the reason; an I/O error that may pass is retried like an engine fault.
            if is_disk_full(exc):
                log.warning("submission %s: inputs not provisioned: %s", submission_id, exc)
                outcomes = _all(claim, R.FAILED, INPUTS_STORAGE_FULL)
            elif is_transient_io_error(exc):
                log.warning("submission %s: inputs not provisioned (will retry): %s",
                            submission_id, exc)
                fault = InfrastructureFault(describe_error(exc), _inputs_gave_up)
            else:
                log.exception("submission %s: inputs not provisioned", submission_id)
                outcomes = _all(claim, R.FAILED, inputs_failed(exc))
        timings["provision"] = time.perf_counter() - t1
        if run_dir is not None:
            try:
                result = _run_container(claim, run_dir, worker_name, gpu)
            except sandbox.EngineError as exc:
                log.warning("submission %s: Docker engine fault: %s", submission_id, exc)
                fault, engine_fault = InfrastructureFault(str(exc), _engine_gave_up), True
            except StorageUnavailableError as exc:  # the cases are given back (bounded)
                log.warning("submission %s: image storage fault: %s", submission_id,
                            exc.strerror)
                fault = InfrastructureFault(str(exc.strerror), _storage_gave_up)
            except sandbox.SandboxError as exc:
                outcomes = _all(claim, R.FAILED, str(exc))
            else:
                timings.update({f"docker_{k}": v for k, v in result.timings.items()})
                t2 = time.perf_counter()
                try:
                    outcomes = _collect(claim, inputs, result, run_dir / "output")
                except PredictionStorageError as exc:
                    log.warning("submission %s: predictions not stored (will retry): %s",
                                submission_id, exc)
                    fault = InfrastructureFault(str(exc), _predictions_gave_up)
                timings["validate"] = time.perf_counter() - t2
    finally:
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        files.close()
    if engine_fault:
        # Hand the cases out again only once the engine answers (bounded; attempts count).
        sandbox.wait_for_engine(settings.sandbox_engine_wait_s)
    elif fault:
        time.sleep(PROVISION_RETRY_PAUSE_S)  # give a passing storage fault a moment

    t3 = time.perf_counter()
    container = None if result is None else ContainerRecord(
        result.exit_code, result.duration_s, result.stdout, result.stderr)
    pipeline.record_runs(claim, outcomes, container=container, fault=fault)
    timings["record"] = time.perf_counter() - t3
    timings["algorithm"] = result.duration_s if result else 0.0
    return timings


def _all(claim: RunClaim, status: CaseRunStatus, message: str) -> Outcomes:
    return {c.run_id: CaseOutcome(status, message) for c in claim.cases}


def _run_container(claim: RunClaim, run_dir: Path, worker_name: str,
                   gpu: str | None) -> sandbox.SandboxResult:
    # This GPU host may not be the one that ran submissions.start: load the image if missing.
    image_ref = claim.image_ref
    if not (image_ref and sandbox.has_image(image_ref)):
        try:
            with _image_tarball(claim.image_key) as tarball:
                image_ref = sandbox.load_image(tarball, expected_id=claim.image_ref or None)
        except FileNotFoundError as exc:
            raise sandbox.SandboxError(_missing_image(exc)) from exc
    labels = {
        sandbox.LABEL_WORKER: worker_name,
        sandbox.LABEL_SUBMISSION: str(claim.submission_id),
        sandbox.LABEL_CASE_RUNS: ",".join(str(c.run_id) for c in claim.cases),
    }
    return sandbox.run_container(
        image_ref, input_dir=run_dir / "input", output_dir=run_dir / "output",
        limits=_limits(claim, gpu), labels=labels,
        should_stop=_cancel_check(claim.submission_id),
        engine_wait_s=settings.sandbox_engine_wait_s, to_host=host_path,
    )


def host_path(path: Path) -> str:
    """The path the Docker engine knows ``path`` (in the work directory) by: the same, unless
    this worker runs in a container whose work directory is ``host_work_dir`` on the engine's
    host (bind mounts are resolved there, not in this container)."""
    path = path.resolve()
    if settings.host_work_dir is None:
        return str(path)
    work = settings.work_dir.resolve()
    if not path.is_relative_to(work):
        raise sandbox.SandboxError(
            f"{path} is not in the work directory {work}, the only folder the Docker host "
            "knows (SYNTHARENA_HOST_WORK_DIR)")
    return str(settings.host_work_dir / path.relative_to(work))


def _provision(submission_id: int, cases: list[CaseInput]) -> Path:
    """A fresh run directory under ``work_dir`` with ``input/`` filled; nothing is left
    behind when this fails (e.g. ENOSPC, raised as OSError)."""
    work = settings.work_dir
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"sub{submission_id}-", dir=work))
    try:
        provision_inputs(run_dir / "input", cases, _uncompressed_dir())
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def _uncompressed_dir() -> Path:
    """Where uncompressed copies of compressed inputs go: with S3, in the object cache (its
    bound and eviction cover them); with local storage, beside the data."""
    if data_storage().local_path("inputs/") is None:
        return object_cache.cache().root / object_cache.DERIVED
    return settings.data_dir / "cache" / "uncompressed"


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
        return pipeline.is_cancelled(submission_id)

    return check


def _collect(claim: RunClaim, inputs: dict[int, CaseInput], result: sandbox.SandboxResult,
             output_dir: Path) -> Outcomes:
    full = _output_storage_full(output_dir)
    if not result.ok:
        status = R.TIMED_OUT if result.timed_out else R.FAILED
        return _all(claim, status, full or result.error_message)
    outcomes: Outcomes = {}
    # With one case per run, its single image counts whatever its name (grand-challenge).
    found = find_outputs(output_dir, [c.name for c in claim.cases])
    for case in claim.cases:
        try:
            checked = check_output(inputs[case.run_id], found.get(case.name, []), claim.batch,
                                   impose_geometry=claim.impose_geometry)
        except OutputError as exc:
            outcomes[case.run_id] = CaseOutcome(R.FAILED, full or str(exc))
            continue
        suffix = "".join(checked.path.suffixes) or ".mha"
        # Through the data storage: the eval worker that scores it may be on another host.
        key = f"predictions/{claim.submission_id}/{case.name}{suffix}"
        try:
            # The imposed-geometry sCT is written beside the output (removed with the run).
            sct = store_output(checked, output_dir.parent / f"imposed-{case.name}{suffix}")
            # A copy (local backend): the stored file never shares the container's inode.
            data_storage().put_file(sct, key, link=False)  # no partial object is left
        except OSError as exc:
            if is_transient_io_error(exc):  # the cases are given back (bounded)
                raise PredictionStorageError(describe_error(exc)) from exc
            log.error("submission %s: prediction of %s not stored: %s", claim.submission_id,
                      case.name, exc)
            outcomes[case.run_id] = CaseOutcome(R.FAILED, (
                "The server's storage is full: the prediction could not be stored. This is "
                "not a fault of the algorithm; the organisers need to free space and "
                "re-evaluate.") if is_disk_full(exc) else (
                f"The prediction could not be stored ({describe_error(exc)}). This is not a "
                "fault of the algorithm; the organisers need to check the server's storage "
                "and re-evaluate."))
            continue
        outcomes[case.run_id] = CaseOutcome(R.SUCCEEDED, "", key, checked.warning)
    return outcomes



# ---------------------------------------------------------------- cases.evaluate


def eval_device() -> str:
    """The torch device the metrics run on (``settings.eval_device``; "auto": CUDA if seen)."""
    if settings.eval_device != "auto":
        return settings.eval_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _score(job: pipeline.Evaluation) -> dict[str, Any]:
    from worker.threads import limit_threads

    limit_threads()  # children x threads within the cores (also for a solo pool)
    # Ground truth and the prediction come through this host's object cache: the GPU worker
    # that wrote the prediction may be on another host. Checked copies, held while scored.
    with contextlib.ExitStack() as files:
        def local(key: str) -> Path:
            return files.enter_context(object_cache.local_file(key))

        return _metrics(job, local(job.prediction_path), local(job.ground_truth_path),
                        local(job.mask_path),
                        local(job.labels_path) if job.labels_path else None, files)


def _metrics(job: pipeline.Evaluation, prediction: Path, ground_truth: Path, mask: Path,
             labels: Path | None, files: contextlib.ExitStack) -> dict[str, Any]:
    from evaluator.scoring import score_case

    device = eval_device()
    metrics: dict[str, Any] = dict(score_case(
        ground_truth, prediction, mask, job.profile, labels_path=labels, device=device,
        region=job.region,
        case_name=job.case_name,
        weights_dir=settings.totalseg_weights_dir,
        # TotalSegmentator's segmentation of a CT without one in the dataset: computed once.
        cache_dir=settings.data_dir / "cache" / "segmentation",
    ))
    if job.plan_path:
        metrics.update(score_dose(job, prediction, device, files))
    return metrics


def score_dose(job: pipeline.Evaluation, prediction: Path, device: str,
               files: contextlib.ExitStack) -> dict[str, Any]:
    """The dose metrics, and the viewer's dose maps and DVHs stored beside the prediction
    (through the data storage: the API that shows them may be on another host)."""
    from evaluator import dose_products

    store = data_storage()
    product_keys = dose_products.keys(job.prediction_path, job.case_name)
    try:
        for key in product_keys:  # a re-evaluation shows no stale dose
            store.delete(key)
    except OSError as exc:  # the views are extras: scoring goes on
        log.warning("old dose views of %s not removed: %s", job.case_name, exc)
    try:
        dose_metrics_report = importlib.import_module("evaluator.dose").dose_metrics_report
    except (ImportError, AttributeError):  # the optional dose extra is not installed
        return {}
    try:
        # The plans read files beside them (CT, structure maps): the case's folder.
        case_dir = files.enter_context(_case_folder(job))
        # The CT dose is computed once per case and cached on this host.
        report = dose_metrics_report(
            case_dir, prediction, cache_dir=settings.data_dir / "cache" / "dose",
            device=device, products=True)
    except Exception as exc:  # dose is best-effort: never lose the image metrics
        log.warning("dose metrics failed for %s: %s", job.case_name, exc)
        return {"dose_error": str(exc)[:500]}
    if report.products is not None and report.products.modalities:
        try:
            # The cache's own scratch folder (made with the cache): on the storage's filesystem.
            with tempfile.TemporaryDirectory(prefix="dose-",
                                             dir=object_cache.cache().root / "tmp") as tmp:
                local = Path(tmp) / "sct.mha"
                dose_products.write(local, job.case_name, report.products)
                # The meta last: its presence says the arrays are complete.
                for path, key in zip(dose_products.paths(local, job.case_name), product_keys,
                                     strict=True):
                    store.put_file(path, key)
        except OSError as exc:  # the views are extras: the scores still count
            log.warning("dose views of %s not stored: %s", job.case_name, exc)
    return dict(report.metrics)


@contextlib.contextmanager
def _case_folder(job: pipeline.Evaluation) -> Iterator[Path]:
    """The ground-truth folder of the job's case (its plans' folder), local."""
    assert job.plan_path
    prefix = str(Path(job.plan_path).parent) + "/"
    scratch = object_cache.cache().root / "tmp"
    # Named as the case: the dose cache keys on the folder's name.
    with tempfile.TemporaryDirectory(prefix="case-", dir=scratch) as tmp, \
            object_cache.local_folder(prefix, Path(tmp) / Path(prefix).name) as folder:
        yield folder


_scoring_storage_gave_up = _gave_up(
    "The ground truth or the prediction could not be read from the storage",
    "the storage and the eval worker's credentials (SYNTHARENA_GT_S3_*)", "scoring")


def _score_retrying(job: pipeline.Evaluation) -> dict[str, Any]:
    """A storage that does not answer (or refuses) is tried again (bounded), never scored as
    the algorithm's failure."""
    for attempt in range(1, settings.case_run_max_attempts):
        try:
            return _score(job)
        except StorageUnavailableError as exc:
            log.warning("case run %s: storage fault while scoring (attempt %d): %s",
                        job.case_run_id, attempt, exc.strerror)
            time.sleep(PROVISION_RETRY_PAUSE_S)
    return _score(job)


def evaluate_case(case_run_id: int) -> None:
    job = pipeline.evaluation_of(case_run_id)
    if job is None:
        return
    try:
        metrics = _score_retrying(job)
    except StorageUnavailableError as exc:
        pipeline.record_score(job, {}, error=_scoring_storage_gave_up(
            settings.case_run_max_attempts, str(exc.strerror)))
        return
    except Exception as exc:  # the participant sees why their case has no score
        from evaluator.errors import EvaluationInputError

        if not isinstance(exc, EvaluationInputError | OSError | ValueError | RuntimeError):
            raise
        pipeline.record_score(job, {}, error=f"The synthetic CT could not be scored: {exc}")
        return
    pipeline.record_score(job, metrics)


# ---------------------------------------------------------------- submissions.finalize


def finalize_submission(submission_id: int) -> None:
    pipeline.finalize(submission_id)
