"""Dataset imports as background jobs, one case at a time.

The request only checks the source and queues an ``ImportJob``; the ``datasets.import`` task
(``run``) converts and stores case after case, committing each case's stored paths with the
progress counts, so a worker killed mid-case leaves that case undone (its files are rewritten on
resume) and every earlier one done. A task works for ``RUN_BUDGET_S`` and then sends the rest
as a new task, so no task outlives its time limit and other work on the queue interleaves. The
version and its cases are created together once every case is in. ``reap`` re-sends jobs a lost
worker left behind. ``import_now`` runs the same steps inside one transaction (small imports,
tests and existing API callers).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from backend.config import settings
from backend.datasets import importers, sources
from backend.datasets import repository as repo
from backend.datasets.schemas import ImportIn
from backend.db import session_scope
from backend.errors import AppError, BadRequestError, ForbiddenError
from backend.models.auth import User
from backend.models.base import utcnow
from backend.models.datasets import Case, Dataset, DatasetVersion, ImportJob, ImportStatus, Modality
from backend.storage import Storage, StorageUnavailableError, data_storage, groundtruth_storage
from backend.tasks_client import enqueue_after_commit

log = logging.getLogger(__name__)

TASK = "datasets.import"
RUN_BUDGET_S = 300.0
UNFINISHED = (ImportStatus.QUEUED, ImportStatus.RUNNING)


@dataclass(frozen=True)
class Planned:
    """A case the job will store: its name (known up front) and how to get its files."""

    name: str
    load: Callable[[Path], importers.FoundCase]  # scratch folder -> the case's files


def check_import_path(user: User, raw: str | None) -> Path:
    if not raw:
        raise BadRequestError("Give `path`: the SynthRAD folder on the server.")
    path = Path(raw).resolve()
    if user.is_admin:
        return path
    roots = [r.resolve() for r in settings.dataset_import_roots]
    if not any(path.is_relative_to(r) for r in roots):
        raise ForbiddenError(
            "Organisers may import only from the server's import folders "
            f"({', '.join(map(str, roots)) or 'none configured'}); ask an administrator."
        )
    return path


def check_s3_source(user: User, raw: str | None) -> tuple[str, str]:
    """``(bucket, prefix)`` of an ``s3://bucket/prefix/`` import source this user may read."""
    if not raw or not raw.startswith("s3://") or not raw[5:].split("/", 1)[0]:
        raise BadRequestError("Give `path` as s3://BUCKET/PREFIX/ (the folder holding the "
                              "SynthRAD layout).")
    bucket, _, prefix = raw[5:].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    where = f"s3://{bucket}/{prefix}"
    if not user.is_admin and not any(
            where.startswith(allowed if allowed.endswith("/") else allowed + "/")
            for allowed in settings.dataset_import_s3_prefixes):
        raise ForbiddenError(
            "Organisers may import only from the server's S3 import prefixes ("
            f"{', '.join(settings.dataset_import_s3_prefixes) or 'none configured'}); ask an "
            "administrator.")
    return bucket, prefix


def check_source(session: Session, user: User,
                 data: ImportIn) -> tuple[dict[str, Any], str]:
    """What the request checks before queueing (cheap: no case is read): the job's spec and
    the version's source text. An archive upload is moved into the data storage here."""
    if data.source == "archive":
        from backend.images.service import take_archive

        if not data.upload_id:
            raise BadRequestError("Give `upload_id`: the finished upload of the archive "
                                  "(POST /api/images/uploads with purpose 'dataset').")
        key, name = take_archive(session, user, data.upload_id)
        return {"kind": "archive", "key": key}, f"archive:{name}"
    if data.source == "s3":
        bucket, prefix = check_s3_source(user, data.path)
        return {"kind": "s3", "bucket": bucket, "prefix": prefix}, f"s3://{bucket}/{prefix}"
    if data.source == "synthrad":
        root = check_import_path(user, data.path)
        try:
            is_dir = root.is_dir()
        except OSError as exc:  # e.g. a name longer than the filesystem allows
            raise BadRequestError(f"{root} cannot be read: {exc.strerror}.") from exc
        if not is_dir:
            raise BadRequestError(f"{root} is not a folder on the server.")
        return {"kind": "synthrad", "path": str(root)}, f"synthrad:{root}"
    # Whether it is installed, without importing it (numpy/scipy: 100+ MiB in the API).
    if importlib.util.find_spec("evaluator.phantoms") is None:
        raise BadRequestError(
            "The phantom generator (evaluator.phantoms) is not installed on this server.")
    spec = {"kind": "phantom", **data.model_dump(include={"anatomy", "task", "cases", "seed",
                                                          "size", "plans"})}
    source = (f"phantom:{data.anatomy}:cases={data.cases}:seed={data.seed}:size={data.size}"
              + (f":task={data.task}" if data.task != "mri" else "")
              + (":plans" if data.plans else ""))
    return spec, source


def new_job(session: Session, user: User, dataset: Dataset, data: ImportIn,
            target_dir: str | None = None) -> ImportJob:
    spec, source = check_source(session, user, data)
    job = ImportJob(dataset_id=dataset.id, created_by_id=user.id, status=ImportStatus.QUEUED,
                    spec=spec, source=source, note=data.note, errors=[], imported={})
    session.add(job)
    session.flush()
    job.target_dir = target_dir or f"{dataset.slug}/import-{job.id}"
    return job


def start(session: Session, user: User, dataset: Dataset, data: ImportIn) -> ImportJob:
    """Queue the import; the task is sent once the request commits."""
    job = new_job(session, user, dataset, data)
    enqueue_after_commit(session, TASK, [job.id])
    return job


def plan_cases(spec: dict[str, Any]) -> list[Planned]:
    if spec["kind"] == "synthrad":
        return [Planned(c.name, partial(_as_is, c))
                for c in importers.find_cases(Path(spec["path"]))]
    if spec["kind"] == "archive":
        return [Planned(c.name, partial(_as_is, c))
                for c in importers.find_cases(sources.unpacked_archive(spec["key"]))]
    if spec["kind"] == "s3":
        return [Planned(name, load) for name, load in sources.s3_cases(spec["bucket"],
                                                                       spec["prefix"])]
    from evaluator.phantoms import case_id

    # Jobs queued before the CBCT task existed have no "task": they made MRI cases.
    return [Planned(case_id(spec["anatomy"], i, spec.get("task", "mri")),
                    partial(_phantom, spec, i))
            for i in range(int(spec["cases"]))]


def _as_is(case: importers.FoundCase, _scratch: Path) -> importers.FoundCase:
    return case


def _phantom(spec: dict[str, Any], index: int, scratch: Path) -> importers.FoundCase:
    from evaluator.phantoms import generate_case

    folder = generate_case(scratch, spec["anatomy"], index, int(spec["seed"]), spec["size"],
                           plans=bool(spec["plans"]), task=spec.get("task", "mri"))
    return importers.find_cases(folder)[0]


def case_prefixes(target_dir: str, name: str) -> tuple[str, str]:
    """The storage folders of a case's inputs and of its ground truth."""
    return f"inputs/{target_dir}/{name}/", f"groundtruth/{target_dir}/{name}/"


def store_case(target_dir: str, planned: Planned) -> tuple[dict[str, Any], int]:
    """Write one case's files into the data and ground-truth stores (anything a killed run
    left there first goes); returns the stored keys (paths relative to the data folder with
    the local backend) and the bytes written."""
    scratch_root = settings.data_dir / "tmp"  # beside the local stores: files are linked in
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="syntharena-import-", dir=scratch_root) as scratch:
        case = planned.load(Path(scratch))
        staged_in = Path(scratch) / "inputs" / case.name
        staged_gt = Path(scratch) / "groundtruth" / case.name
        importers.write_as_mha(case.input_image, staged_in / f"{case.modality.value}.mha")
        importers.write_as_mha(case.mask, staged_in / "mask.mha")
        (staged_in / "region.json").write_text(json.dumps(case.region))
        ct = importers.copy_ground_truth(case.ct, staged_gt, "ct")
        labels = (importers.copy_ground_truth(case.labels, staged_gt, "labels")
                  if case.labels else None)
        segmentation = (importers.copy_ground_truth(case.segmentation, staged_gt, "segmentation")
                        if case.segmentation else None)
        plan = (importers.copy_ground_truth(case.plan, staged_gt, _plain_stem(case.plan))
                if case.plan else None)
        for extra in case.plan_extras:  # other plans and the structure maps the plans name
            importers.copy_ground_truth(extra, staged_gt, _plain_stem(extra))
        in_prefix, gt_prefix = case_prefixes(target_dir, case.name)
        if settings.storage_backend == "local":
            # Only the service account (backend + worker) may read ground truth.
            settings.groundtruth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        size = _put_folder(data_storage(), staged_in, in_prefix)
        size += _put_folder(groundtruth_storage(), staged_gt, gt_prefix)

    def key(prefix: str, staged: Path, p: Path | None) -> str | None:
        return prefix + str(p.relative_to(staged)) if p is not None else None

    record = {"modality": case.modality.value, "region": case.region,
              "input_image_path": f"{in_prefix}{case.modality.value}.mha",
              "mask_path": f"{in_prefix}mask.mha",
              "ground_truth_path": key(gt_prefix, staged_gt, ct),
              # The case's label map (the phantoms', else SynthRAD2025's); the other one, when
              # both exist, lies beside it (pipeline.label_map_for picks per profile).
              "labels_path": key(gt_prefix, staged_gt, labels or segmentation),
              "plan_path": key(gt_prefix, staged_gt, plan)}
    return record, size


def _put_folder(store: Storage, folder: Path, prefix: str) -> int:
    """Replace what is stored under ``prefix`` with the files of ``folder``; the bytes."""
    store.delete_prefix(prefix)
    size = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(path, prefix + str(path.relative_to(folder)))
        size += path.stat().st_size
    return size


def _plain_stem(path: Path) -> str:
    """``plan_photon.json`` -> ``plan_photon``; ``structures.nii.gz`` -> ``structures``."""
    return path.name.split(".", 1)[0]


def _record(job: ImportJob, name: str, record: dict[str, Any] | None, size: int,
            error: str | None = None) -> None:
    """One case's outcome into the job (new containers: the JSON columns see the change)."""
    job.errors = [e for e in job.errors if e["case"] != name]
    if error is not None:
        job.errors = [*job.errors, {"case": name, "error": error}]
        return
    assert record is not None
    job.imported = {**job.imported, name: record}
    job.cases_done = len(job.imported)
    job.bytes_done += size


def publish(session: Session, job: ImportJob) -> DatasetVersion:
    """Every case is in: the next version of the dataset and its cases, in one go."""
    repo.lock_dataset(session, job.dataset_id)  # serialise version numbers per dataset
    version = DatasetVersion(dataset_id=job.dataset_id,
                             version=repo.next_version(session, job.dataset_id),
                             source=job.source, note=job.note, case_count=len(job.imported))
    session.add(version)
    session.flush()
    for name in sorted(job.imported):
        rec = job.imported[name]
        session.add(Case(dataset_version_id=version.id, name=name,
                         modality=Modality(rec["modality"]), region=rec["region"],
                         input_image_path=rec["input_image_path"], mask_path=rec["mask_path"],
                         ground_truth_path=rec["ground_truth_path"],
                         labels_path=rec["labels_path"], plan_path=rec["plan_path"]))
    job.status, job.finished_at, job.runner = ImportStatus.SUCCEEDED, utcnow(), None
    job.dataset_version_id = version.id
    sources.release(job.spec)
    job.message = f"Imported version {version.version} with {version.case_count} cases."
    session.flush()
    return version


def _remove_files(job: ImportJob) -> None:
    try:
        data_storage().delete_prefix(f"inputs/{job.target_dir}/")
        groundtruth_storage().delete_prefix(f"groundtruth/{job.target_dir}/")
    except StorageUnavailableError as exc:  # the job's outcome stands; the files stay behind
        log.warning("import %s: files under %s not removed: %s", job.id, job.target_dir,
                    exc.strerror)


def _fail(job: ImportJob, message: str) -> None:
    job.status, job.finished_at, job.runner, job.message = (
        ImportStatus.FAILED, utcnow(), None, message)
    _remove_files(job)
    sources.release(job.spec)


def import_now(session: Session, user: User, dataset: Dataset, data: ImportIn) -> DatasetVersion:
    """The whole import inside the caller's transaction; a failing case fails it (400)."""
    repo.lock_dataset(session, dataset.id)
    job = new_job(session, user, dataset, data,
                  target_dir=f"{dataset.slug}/v{repo.next_version(session, dataset.id)}")
    job.status, job.started_at = ImportStatus.RUNNING, utcnow()
    try:
        planned = plan_cases(job.spec)
        job.cases_total = len(planned)
        for case in planned:
            try:
                record, size = store_case(job.target_dir, case)
            except AppError:
                raise
            except Exception as exc:
                raise BadRequestError(f"Case {case.name} could not be imported: {exc}") from exc
            _record(job, case.name, record, size)
        return publish(session, job)
    except BaseException:
        _remove_files(job)
        sources.release(job.spec)
        raise


@dataclass
class _Run:
    job_id: int
    runner: str = field(default_factory=lambda: uuid.uuid4().hex)

    def owned(self, s: Session) -> ImportJob | None:
        """The job, locked, while this run still owns it (a reaper resend may take it over)."""
        job = repo.lock_job(s, self.job_id)
        if job is None or job.status is not ImportStatus.RUNNING or job.runner != self.runner:
            return None
        return job


def run(job_id: int, budget_s: float = RUN_BUDGET_S) -> None:
    """The task: claim the job, store the cases not yet stored until ``budget_s`` is spent,
    then send the rest as a new task or, with every case done, publish the version."""
    this = _Run(job_id)
    with session_scope() as s:
        job = repo.lock_job(s, job_id)
        if job is None or job.status not in UNFINISHED or job.runner is not None:
            return  # gone, finished, or owned by a live run (a duplicate message)
        job.status, job.runner = ImportStatus.RUNNING, this.runner
        job.started_at = job.started_at or utcnow()
        spec, target, done = dict(job.spec), job.target_dir, set(job.imported)
    try:
        planned = plan_cases(spec)
    except AppError as exc:
        with session_scope() as s:
            if (job := this.owned(s)) is not None:
                _fail(job, exc.message)
        return
    with session_scope() as s:
        if (job := this.owned(s)) is None:
            return
        job.cases_total = len(planned)
    deadline = time.monotonic() + budget_s
    todo = [case for case in planned if case.name not in done]
    for i, case in enumerate(todo):
        record, size, error = None, 0, None
        try:
            record, size = store_case(target, case)
        except AppError as exc:
            error = exc.message
        except Exception as exc:  # the case's files (unreadable image, bad plan): recorded
            error = f"{type(exc).__name__}: {exc}"
        with session_scope() as s:
            if (job := this.owned(s)) is None:
                return
            _record(job, case.name, record, size, error)
            if i + 1 < len(todo) and time.monotonic() > deadline:
                job.runner = None  # whoever takes the next message continues
                enqueue_after_commit(s, TASK, [job_id])
                return
    with session_scope() as s:
        if (job := this.owned(s)) is None:
            return
        if job.errors:
            _fail(job, f"{len(job.errors)} of {job.cases_total} cases could not be imported "
                       "(see the errors); nothing was published. Fix them and import again.")
        else:
            publish(s, job)


def lost_worker_message(resends: int) -> str:
    return (f"The import's worker was lost {resends} times (killed, e.g. for memory, or "
            "restarted); check the worker's logs and memory, then import again.")


def reap(live: frozenset[int] | None, *, grace_s: float, hard_s: float) -> list[int]:
    """Re-send imports a lost worker left: running with an owner that no live task is (after
    ``grace_s``; ``live`` None = no worker answered, then only after ``hard_s``), or waiting
    for a message for ``hard_s`` (lost with the broker). After ``case_run_max_attempts``
    resends the job fails. Returns the ids re-sent."""
    now = utcnow()
    resent: list[int] = []
    with session_scope() as s:
        for stale in repo.unmoved_jobs(s, now - timedelta(seconds=grace_s)):
            age = (now - stale.updated_at).total_seconds()
            owned = stale.runner is not None
            orphaned = owned and live is not None and stale.id not in live
            if not (orphaned or age > hard_s):
                continue
            job = repo.lock_job(s, stale.id)
            if job is None or job.status not in UNFINISHED:
                continue
            if job.attempts >= settings.case_run_max_attempts:
                _fail(job, lost_worker_message(job.attempts))
                continue
            job.attempts += 1
            job.runner = None
            enqueue_after_commit(s, TASK, [job.id])
            resent.append(job.id)
    return resent
