"""Import sources the import worker fetches first: an uploaded archive (moved into the data
storage by the request that queued the import, so any worker host can read it) and an S3
prefix (read with the ground-truth credentials, which only the API and the eval/import workers
hold). Both end as SynthRAD-layout case folders for ``importers.find_cases``.

An archive is unpacked once per worker host (a later run of the same job reuses it) into the
data folder's ``tmp/``, refusing members that would land outside it (absolute paths, ``..``,
links out, devices: tarfile's ``data`` filter; the same rules for zip) and archives that would
unpack to more than the limit or the free space.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import logging
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from backend import object_cache
from backend.config import settings
from backend.datasets import importers
from backend.errors import BadRequestError, InsufficientStorageError
from backend.images.validation import human_size
from backend.storage import (
    Storage,
    StorageUnavailableError,
    _groundtruth_config,
    _s3,
    data_storage,
)

log = logging.getLogger(__name__)

CaseSource = tuple[str, Callable[[Path], importers.FoundCase]]  # name, scratch -> its files
UNPACKED = ".unpacked"  # written last: the folder holds the whole archive


def _unpack_root(key: str) -> Path:
    return settings.data_dir / "tmp" / "archives" / hashlib.sha256(key.encode()).hexdigest()[:24]


def unpacked_archive(key: str) -> Path:
    """The folder the stored archive ``key`` unpacks to on this host (unpacked when missing)."""
    root = _unpack_root(key)
    if (root / UNPACKED).is_file():
        return root / "data"
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f"{root.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one unpacking per archive and host
        if not (root / UNPACKED).is_file():
            shutil.rmtree(root, ignore_errors=True)  # what a killed run left
            (root / "data").mkdir(parents=True)
            try:
                with object_cache.local_file(key) as archive:
                    _unpack(archive, root / "data")
            except BaseException as exc:
                shutil.rmtree(root, ignore_errors=True)  # never a half-unpacked folder
                if isinstance(exc, FileNotFoundError):
                    raise BadRequestError("The uploaded archive is no longer stored; upload it "
                                          "again.") from exc
                unreadable = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError)
                if isinstance(exc, unreadable) and not isinstance(exc, StorageUnavailableError):
                    raise BadRequestError(f"The archive could not be unpacked ({exc}); upload "
                                          "a .tar, .tar.gz, .tgz or .zip file.") from exc
                raise  # refusals (BadRequestError, no room) and storage faults as they are
            (root / UNPACKED).touch()
    return root / "data"


def _check_room(total: int, dest: Path) -> None:
    if total > settings.max_dataset_unpacked_bytes:
        raise BadRequestError(
            f"The archive unpacks to {human_size(total)}; the limit is "
            f"{human_size(settings.max_dataset_unpacked_bytes)}. Import from a folder on the "
            "server or an S3 prefix instead.")
    free = shutil.disk_usage(dest).free
    if total > free:
        raise InsufficientStorageError(
            f"The archive unpacks to {human_size(total)}; the import worker has "
            f"{human_size(free)} free. Free space on the worker and import again.")


def _outside(member: str) -> BadRequestError:
    return BadRequestError(f"The archive member '{member[:200]}' would be written outside the "
                           "import folder (absolute path, '..' or a link out); nothing was "
                           "imported. Pack the dataset folder with relative paths.")


def _unpack(archive: Path, dest: Path) -> None:
    if zipfile.is_zipfile(archive):
        _unzip(archive, dest)
        return
    with tarfile.open(archive) as tar:  # plain, gzip, bz2 or xz: detected
        members = tar.getmembers()
        _check_room(sum(m.size for m in members if m.isfile()), dest)
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise _outside(exc.tarinfo.name) from exc


def _unzip(archive: Path, dest: Path) -> None:
    top = dest.resolve()
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        _check_room(sum(i.file_size for i in infos), dest)
        for info in infos:
            target = (dest / info.filename).resolve()
            if info.filename.startswith("/") or not target.is_relative_to(top):
                raise _outside(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _outside(info.filename)  # links are not followed: refused
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)


def _import_store(bucket: str, prefix: str) -> Storage:
    """The S3 prefix, read with the ground-truth credentials and endpoint."""
    return _s3(dataclasses.replace(_groundtruth_config(), bucket=bucket, prefix=prefix,
                                   what="import source"))


def s3_cases(bucket: str, prefix: str) -> list[CaseSource]:
    """The case folders under ``s3://bucket/prefix`` (each with ct, mask and an MR or CBCT
    image, as in the SynthRAD layout), each fetched when the job stores it."""
    where = f"s3://{bucket}/{prefix}"
    try:
        keys = _import_store(bucket, prefix).keys("")
    except StorageUnavailableError as exc:
        raise BadRequestError(f"{where} could not be listed ({exc.strerror}); check the path "
                              "and that the import worker's credentials may read it.") from exc
    folders: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        folders[posixpath.dirname(key)].append(key)
    cases: list[CaseSource] = []
    for folder, files in sorted(folders.items()):
        stems = {importers.stem_of(posixpath.basename(k)) for k in files}
        if folder and {"ct", "mask"} <= stems and stems & set(importers.MODALITY_STEMS):
            cases.append((posixpath.basename(folder),
                          partial(_fetch_case, bucket, prefix, folder, tuple(files))))
    if not cases:
        raise BadRequestError(f"No cases under {where}: expected folders holding ct, mask and "
                              "mr or cbct images (the SynthRAD layout).")
    names = [name for name, _ in cases]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadRequestError(f"Case names must be unique; repeated: {', '.join(repeated)}.")
    return cases


def _fetch_case(bucket: str, prefix: str, folder: str, files: tuple[str, ...],
                scratch: Path) -> importers.FoundCase:
    store = _import_store(bucket, prefix)
    # Under its parent's name: without a region.json the region is the parent folder's name.
    parent = posixpath.basename(posixpath.dirname(folder)) or "cases"
    dest = scratch / "s3" / parent / posixpath.basename(folder)
    dest.mkdir(parents=True)
    for key in files:
        with (dest / posixpath.basename(key)).open("wb") as out:
            store.download(key, out)
    return importers.find_cases(dest)[0]


def release(spec: dict[str, Any]) -> None:
    """The job ended: its stored archive and this host's unpacked copy go."""
    if spec.get("kind") != "archive":
        return
    try:
        data_storage().delete(spec["key"])
    except OSError as exc:
        log.warning("import archive %s not removed: %s", spec["key"], exc)
    shutil.rmtree(_unpack_root(spec["key"]), ignore_errors=True)
