from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend import access
from backend.config import settings
from backend.db import session_scope
from backend.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    InsufficientStorageError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from backend.images import repository as repo
from backend.images.schemas import UploadIn
from backend.images.validation import ImageInvalidError, human_size, validate_tarball
from backend.models import AlgorithmImage, ImageStatus, ImageUpload, UploadStatus, User, utcnow
from backend.storage import (
    StorageUnavailableError,
    data_storage,
    free_bytes,
    get_storage,
    is_disk_full,
)

HASH_READ = 1024 * 1024
# Running sha256 per upload in this process, so the hash is computed as bytes arrive. After a
# restart (or in another process) the prefix on disk is re-hashed once, streaming.
_hashers: dict[str, tuple[int, Any]] = {}
_busy: set[str] = set()
_busy_lock = threading.Lock()
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_UNLINK_KEY = "syntharena_unlink_after_commit"
_UNDO_KEY = "syntharena_unlink_after_rollback"
log = logging.getLogger(__name__)


def part_path(upload_id: str) -> Path:
    return settings.uploads_dir / f"{upload_id}.part"


def _after_commit(session: Session, what: str, delete: Callable[[], object]) -> None:
    """Delete a file once the transaction commits: a request refused later (e.g. a 507) or
    whose commit fails rolls its rows back, and they must not be left pointing at deleted
    files. Every deletion of an upload's or an image's file goes through here."""
    session.info.setdefault(_UNLINK_KEY, []).append((what, delete))


def _unlink_after_commit(session: Session, path: Path) -> None:
    _after_commit(session, str(path), functools.partial(path.unlink, missing_ok=True))


@event.listens_for(Session, "after_commit")
def _unlink_committed(session: Session) -> None:
    if session.in_nested_transaction():  # a SAVEPOINT released: the outer one may roll back
        return
    session.info.pop(_UNDO_KEY, None)
    for what, delete in session.info.pop(_UNLINK_KEY, []):
        try:
            delete()
        except Exception:  # the commit stands; a file left over only costs space
            log.exception("could not delete %s after commit", what)


@event.listens_for(Session, "after_soft_rollback")
def _keep_on_rollback(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # the outermost transaction rolled back
        session.info.pop(_UNLINK_KEY, None)
        for path in session.info.pop(_UNDO_KEY, []):  # files made for rows that are gone
            path.unlink(missing_ok=True)


def expire_uploads(session: Session, owner_id: int | None = None) -> int:
    """Abort the uploads idle for longer than ``upload_expiry_s`` — this user's (frees quota
    before a new one), or everyone's (the API's periodic sweep, frees the disk); their parts
    are deleted after the commit. Returns how many."""
    cutoff = utcnow() - timedelta(seconds=settings.upload_expiry_s)
    stale = repo.stale_uploads(session, owner_id, cutoff)
    for upload in stale:
        upload.status = UploadStatus.ABORTED
        _unlink_after_commit(session, part_path(upload.id))
        _hashers.pop(upload.id, None)
    session.flush()
    return len(stale)


ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def _check_dataset_archive(session: Session, user: User, data: UploadIn) -> None:
    """A dataset archive: organisers only (it bypasses the image quota), an archive's name,
    within the archive limit."""
    if not (user.is_admin or access.organises_any(session, user)):
        raise ForbiddenError("Only challenge organisers upload dataset archives.")
    if not data.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise BadRequestError(f"A dataset archive is a {', '.join(ARCHIVE_SUFFIXES)} file; "
                              f"'{data.name}' is not.")
    if data.size_bytes > settings.max_dataset_archive_bytes:
        raise PayloadTooLargeError(
            f"The archive is {human_size(data.size_bytes)}; the limit is "
            f"{human_size(settings.max_dataset_archive_bytes)}. Import from a folder on the "
            "server or an S3 prefix instead.")


def create_upload(session: Session, user: User, data: UploadIn) -> ImageUpload:
    expire_uploads(session, user.id)
    if data.purpose == "dataset":
        _check_dataset_archive(session, user, data)
    elif data.size_bytes > settings.max_image_bytes:
        raise PayloadTooLargeError(
            f"The image is {human_size(data.size_bytes)}; the limit is "
            f"{human_size(settings.max_image_bytes)}."
            " Use a slimmer base image or compress it (gzip or xz)."
        )
    used = repo.bytes_in_use(session, user.id)
    if data.purpose == "image" and used + data.size_bytes > settings.user_image_quota_bytes:
        raise PayloadTooLargeError(
            f"This upload would exceed your storage quota ({human_size(used)} used of "
            f"{human_size(settings.user_image_quota_bytes)}). Delete images you no longer need."
        )
    free = free_bytes(settings.uploads_dir)
    if free < data.size_bytes:
        raise InsufficientStorageError(
            f"The server's storage has {human_size(free)} free, not enough for this "
            f"{human_size(data.size_bytes)} upload. Nothing was created; try again later or "
            "tell the organisers."
        )
    upload = ImageUpload(
        id=uuid.uuid4().hex,
        owner_id=user.id,
        name=data.name,
        total_bytes=data.size_bytes,
        received_bytes=0,
        status=UploadStatus.OPEN,
    )
    session.add(upload)
    session.flush()  # the row first: a refused row leaves no empty part file behind
    try:
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        part_path(upload.id).touch()
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise InsufficientStorageError(
            "The server's storage is full: the upload could not be created. Nothing was "
            "saved; try again later or tell the organisers."
        ) from exc
    # ... and if the request's transaction rolls back after this, the file goes with it.
    session.info.setdefault(_UNDO_KEY, []).append(part_path(upload.id))
    return upload


def get_upload(session: Session, user: User, upload_id: str, lock: bool = False) -> ImageUpload:
    upload = repo.lock_upload(session, upload_id) if lock else session.get(ImageUpload, upload_id)
    if upload is None or upload.owner_id != user.id:
        raise NotFoundError(f"You have no upload {upload_id}.")
    return upload


def parse_content_range(header: str | None) -> tuple[int, int, int]:
    match = _RANGE.match((header or "").strip())
    if match is None:
        raise BadRequestError("Send a header `Content-Range: bytes START-END/TOTAL`.")
    start, end, total = (int(g) for g in match.groups())
    if end < start or end >= total:
        raise BadRequestError(f"Content-Range {header} is not a valid byte range.")
    if end - start + 1 > settings.max_upload_chunk_bytes:
        raise PayloadTooLargeError(
            f"Chunks are at most {settings.max_upload_chunk_bytes} bytes; send smaller ones."
        )
    return start, end, total


@contextmanager
def chunk_guard(upload_id: str) -> Iterator[None]:
    """One chunk at a time per upload (in this process); a parallel one gets a 409."""
    with _busy_lock:
        if upload_id in _busy:
            raise ConflictError("Another chunk of this upload is being received; wait for it.")
        _busy.add(upload_id)
    try:
        yield
    finally:
        with _busy_lock:
            _busy.discard(upload_id)


def check_chunk(user_id: int, upload_id: str, start: int, total: int) -> None:
    with session_scope() as session:
        upload = session.get(ImageUpload, upload_id)
        if upload is None or upload.owner_id != user_id:
            raise NotFoundError(f"You have no upload {upload_id}.")
        if upload.status is not UploadStatus.OPEN:
            raise ConflictError(f"Upload {upload_id} is {upload.status.value}; start a new one.")
        if total != upload.total_bytes:
            raise BadRequestError(
                f"Content-Range total {total} differs from the upload size {upload.total_bytes}."
            )
        if start != upload.received_bytes:
            raise ConflictError(
                f"The server has {upload.received_bytes} bytes of this upload; "
                f"resume from byte {upload.received_bytes}."
            )


def _hasher_at(upload_id: str, offset: int) -> Any:
    cached = _hashers.get(upload_id)
    if cached is not None and cached[0] == offset:
        return cached[1]
    h = hashlib.sha256()
    remaining = offset
    with part_path(upload_id).open("rb") as f:
        while remaining > 0:
            block = f.read(min(HASH_READ, remaining))
            if not block:
                break
            h.update(block)
            remaining -= len(block)
    return h


class ChunkWriter:
    """Writes a chunk at its offset and advances the running sha256."""

    def __init__(self, upload_id: str, start: int) -> None:
        self.upload_id = upload_id
        self.start = start
        self.offset = start
        self.hasher = _hasher_at(upload_id, start)
        # Unbuffered: the request's pieces (~256 KiB) go straight to the kernel, with no copy
        # into a user-space buffer first.
        self.file: BinaryIO = part_path(upload_id).open("r+b", buffering=0)
        self.file.seek(start)
        self.file.truncate()  # drop bytes past the acknowledged offset (an interrupted chunk)

    def write(self, pieces: Sequence[bytes]) -> None:
        """Append ``pieces`` in order (both the write and the hash release the GIL). A piece
        is hashed and counted once written: a failed write leaves offset and hash agreeing."""
        for piece in pieces:
            view = memoryview(piece)
            while view:  # a raw write may be short
                view = view[self.file.write(view):]
            self.hasher.update(piece)
            self.offset += len(piece)

    def close(self) -> None:
        self.file.close()
        _hashers[self.upload_id] = (self.offset, self.hasher)

    def discard(self) -> None:
        """Drop this whole chunk (the disk filled up): the part file is cut back to ``start``,
        which stays the upload's offset, and the running hash is recomputed on resume."""
        with contextlib.suppress(OSError):
            self.file.close()
        _hashers.pop(self.upload_id, None)
        with part_path(self.upload_id).open("r+b") as f:
            f.truncate(self.start)  # frees space; needs none
        self.offset = self.start


def storage_full_error(start: int) -> InsufficientStorageError:
    return InsufficientStorageError(
        "The server's storage is full: this chunk was not saved. The upload keeps its first "
        f"{start} bytes; resume from byte {start} later (GET the upload for its offset)."
    )


def record_chunk(upload_id: str, start: int, written: int) -> ImageUpload:
    with session_scope() as session:
        upload = repo.lock_upload(session, upload_id)
        if upload is None:
            raise NotFoundError(f"Upload {upload_id} disappeared.")
        if upload.received_bytes == start:
            upload.received_bytes = start + written
        session.flush()
        session.expunge(upload)
        return upload


def _finished_sha(upload_id: str, total: int) -> str:
    return str(_hasher_at(upload_id, total).hexdigest())


def _require_received(upload: ImageUpload, again: str) -> None:
    """An open upload holding every byte; otherwise a 409 saying what to do (``again``: what
    to do when the upload is used up or aborted)."""
    if upload.status is not UploadStatus.OPEN:
        raise ConflictError(f"Upload {upload.id} is {upload.status.value}; {again}.")
    if upload.received_bytes != upload.total_bytes:
        raise ConflictError(
            f"The upload is incomplete: {upload.received_bytes} of {upload.total_bytes} bytes "
            f"received. Resume from byte {upload.received_bytes}."
        )


def complete(session: Session, user: User, upload_id: str) -> tuple[AlgorithmImage, str | None]:
    """Validate the finished upload and create its image. Returns (image, notice)."""
    upload = get_upload(session, user, upload_id, lock=True)
    if upload.status is UploadStatus.COMPLETE and upload.image_id is not None:
        image = session.get(AlgorithmImage, upload.image_id)
        if image is not None:
            return image, None
    _require_received(upload, "start a new one")
    path = part_path(upload_id)
    sha = _finished_sha(upload_id, upload.total_bytes)
    _hashers.pop(upload_id, None)
    existing = repo.image_by_sha(session, user.id, sha)
    if existing is not None:
        _unlink_after_commit(session, path)
        upload.status = UploadStatus.COMPLETE
        upload.image_id = existing.id
        return existing, _duplicate_notice(existing)
    image = AlgorithmImage(
        owner_id=user.id,
        name=upload.name,
        sha256=sha,
        size_bytes=upload.total_bytes,
        status=ImageStatus.VALIDATING,
        storage_key=f"{user.id}/{sha}.tar",
    )
    try:
        report = validate_tarball(
            path,
            max_uncompressed_bytes=settings.max_image_uncompressed_bytes,
            max_json_bytes=settings.max_manifest_bytes,
        )
    except ImageInvalidError as exc:
        image.status = ImageStatus.INVALID
        image.validation_message = exc.message
        # Invalid bytes are not kept (nor counted in the quota).
        _unlink_after_commit(session, path)
    else:
        image.status = ImageStatus.VALID
        image.docker_image_id = report.docker_image_id
        image.compression = report.compression
        image.storage_key += {"gzip": ".gz", "xz": ".xz"}.get(report.compression, "")
        tags = ", ".join(report.repo_tags) or "untagged"
        who = report.user if report.user == report.runs_as else \
            f"{report.user} (uid:gid {report.runs_as})"
        image.validation_message = f"Valid: {tags}, runs as user {who}."
    try:
        with session.begin_nested():
            session.add(image)
            session.flush()
    except IntegrityError:
        # The same bytes finished through another upload at the same moment.
        _unlink_after_commit(session, path)
        found = repo.image_by_sha(session, user.id, sha)
        if found is None:
            raise
        upload.status = UploadStatus.COMPLETE
        upload.image_id = found.id
        return found, _duplicate_notice(found)
    if image.status is ImageStatus.VALID:
        try:
            # The upload's file is kept until commit: if the request rolls back, the upload
            # stays open with its bytes and ``complete`` can be called again (it stores the
            # same bytes under the same key).
            get_storage().put_file(path, image.storage_key)
        except StorageUnavailableError as exc:
            # The request rolls back (no image row); the upload keeps its bytes.
            log.error("upload %s: %s", upload_id, exc.strerror)
            raise ServiceUnavailableError(
                f"The image is valid, but {exc.strerror}. Your upload is kept as it was: call "
                "complete again in a moment."
            ) from exc
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # The request rolls back (no image row); put_file left no partial file.
            raise InsufficientStorageError(
                "The server's storage is full: the image is valid but could not be stored. "
                "Your upload is kept as it was: call complete again later, or delete the "
                "upload."
            ) from exc
        _unlink_after_commit(session, path)
    upload.status = UploadStatus.COMPLETE
    upload.image_id = image.id
    session.flush()
    return image, None


def _duplicate_notice(image: AlgorithmImage) -> str:
    return (
        f"You already uploaded this exact image as #{image.id} '{image.name}' on "
        f"{image.created_at:%Y-%m-%d %H:%M} UTC ({image.status.value}); that one is used."
    )


def take_archive(session: Session, user: User, upload_id: str) -> tuple[str, str]:
    """A finished dataset-archive upload, moved into the data storage for the import job:
    ``(storage key, name)``. The upload is then complete (its part file goes after commit)."""
    upload = get_upload(session, user, upload_id, lock=True)
    _require_received(upload, "upload the archive again")
    if not upload.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise BadRequestError(f"Upload {upload_id} ('{upload.name}') is not a dataset archive "
                              f"({', '.join(ARCHIVE_SUFFIXES)}).")
    suffix = next(x for x in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True)
                  if upload.name.lower().endswith(x))
    key = f"imports/{upload_id}/archive{suffix}"
    try:
        data_storage().put_file(part_path(upload_id), key)  # local: a hard link, no copy
    except StorageUnavailableError as exc:
        raise ServiceUnavailableError(f"The archive could not be stored ({exc.strerror}); "
                                      "try again shortly.") from exc
    _hashers.pop(upload_id, None)
    upload.status = UploadStatus.COMPLETE
    _unlink_after_commit(session, part_path(upload_id))
    return key, upload.name


def abort(session: Session, user: User, upload_id: str) -> None:
    upload = get_upload(session, user, upload_id, lock=True)
    if upload.status is UploadStatus.OPEN:
        upload.status = UploadStatus.ABORTED
        _unlink_after_commit(session, part_path(upload_id))
        _hashers.pop(upload_id, None)


def list_images(session: Session, user: User, offset: int = 0,
                limit: int | None = None) -> Sequence[AlgorithmImage]:
    """The user's images, newest first (``offset``/``limit``: one page)."""
    return repo.images_of(session, user.id, offset, limit)


def get_image(session: Session, user: User, image_id: int) -> AlgorithmImage:
    image = session.get(AlgorithmImage, image_id)
    # Other users' images are "not found": their existence is not revealed.
    if image is None or (image.owner_id != user.id and not user.is_admin):
        raise NotFoundError(f"You have no image {image_id}.")
    return image


def delete_image(session: Session, user: User, image_id: int) -> None:
    image = get_image(session, user, image_id)
    if repo.used_by_submissions(session, image.id):
        raise ConflictError(
            f"Image #{image.id} is used by submissions and is kept for their record."
        )
    if image.status is ImageStatus.VALID:
        storage = get_storage()
        _after_commit(session, f"image {image.storage_key}",
                      functools.partial(storage.delete, image.storage_key))
    session.delete(image)
