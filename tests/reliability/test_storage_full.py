"""Faults: the server's storage is full, for real (small tmpfs mounts, not mocks), when an
upload is created, mid-upload, when it is completed, when the worker provisions a case's inputs
and when it stores a prediction. The API answers a 507 that says what happened (never a 500),
the worker fails the case with a reason that blames the storage (never stuck in RUNNING),
nothing half-written is left, and the same request succeeds once space is freed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from backend.db import session_scope
from backend.models import ImageUpload, utcnow
from tests.reliability import figures, stack
from tests.reliability.conftest import ReliabilityEnv
from tests.worker import harness
from tests.worker.helpers import EXAMPLES_OUT

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TMPFS_MB = 8
FREE_LEFT = 192 * 1024  # free bytes left on the tmpfs before the upload
FIRST_CHUNK = 64 * 1024  # fits; the rest of the image does not


def _detail(r: httpx.Response) -> str:
    try:
        return str(r.json().get("detail", ""))
    except ValueError:
        return r.text


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_storage_full_mid_upload(private_stack: Any) -> None:
    from backend.auth.service import create_token

    base: ReliabilityEnv = private_stack[0]
    data = (EXAMPLES_OUT / "static-c.tar.gz").read_bytes()
    total = len(data)
    assert FIRST_CHUNK < FREE_LEFT < total, total
    mnt = Path(tempfile.mkdtemp(prefix="syntharena-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mnt)],
                   check=True)
    api = None
    try:
        env = ReliabilityEnv(base.database_url, base.redis_url, mnt)
        harness.configure(env)
        harness.truncate_all()
        with session_scope() as s:
            _, token = create_token(s, harness.user(s, "full-disk"), "t", None)
        api = stack.ApiServer(env)
        api.start()
        filler = mnt / "filler"
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as c:
            uid = c.post("/api/images/uploads", json={"name": "algo", "size_bytes": total}
                         ).json()["id"]
            part = mnt / "uploads" / f"{uid}.part"
            big = 6 * 1024 * 1024  # created while there is room (creating checks free space)
            uid2 = c.post("/api/images/uploads", json={"name": "big", "size_bytes": big}
                          ).json()["id"]
            with filler.open("wb") as f:  # leave FREE_LEFT bytes
                f.write(b"\0" * (_free(mnt) - FREE_LEFT))
            r = c.put(f"/api/images/uploads/{uid}", content=data[:FIRST_CHUNK],
                      headers={"Content-Range": f"bytes 0-{FIRST_CHUNK - 1}/{total}"})
            assert r.status_code == 200, r.text
            r = c.put(f"/api/images/uploads/{uid}", content=data[FIRST_CHUNK:],
                      headers={"Content-Range": f"bytes {FIRST_CHUNK}-{total - 1}/{total}"})
            full_status, full_detail = r.status_code, _detail(r)
            offset = c.get(f"/api/images/uploads/{uid}").json()["received_bytes"]
            part_size = part.stat().st_size
            with session_scope() as s:
                row = s.get(ImageUpload, uid)
                assert row is not None
                row_bytes, row_status = row.received_bytes, row.status.value
            # A chunk far bigger than the free space: ENOSPC on its first 4 MiB write, the
            # rest of the body is drained, nothing of it is kept.
            r = c.put(f"/api/images/uploads/{uid2}", content=os.urandom(big),
                      headers={"Content-Range": f"bytes 0-{big - 1}/{big}"})
            big_result = (r.status_code, c.get(f"/api/images/uploads/{uid2}").json()[
                "received_bytes"], (mnt / "uploads" / f"{uid2}.part").stat().st_size)
            big_detail = _detail(r)
            assert c.delete(f"/api/images/uploads/{uid2}").status_code == 204
            filler.unlink()  # space freed: the upload resumes from its offset
            r = c.put(f"/api/images/uploads/{uid}", content=data[offset:],
                      headers={"Content-Range": f"bytes {offset}-{total - 1}/{total}"})
            assert r.status_code == 200, r.text
            out = c.post(f"/api/images/uploads/{uid}/complete").json()
        left = [p for p in (mnt / "uploads").rglob("*") if p.is_file()]
    finally:
        if api is not None:
            api.stop()
        harness.configure(base)
        subprocess.run(["umount", str(mnt)], check=True)
        mnt.rmdir()
    clear = full_status == 507 and "storage is full" in full_detail \
        and f"resume from byte {FIRST_CHUNK}" in full_detail
    kept_right = (offset, part_size, row_bytes, row_status) == (FIRST_CHUNK, FIRST_CHUNK,
                                                                 FIRST_CHUNK, "open")
    kept_right = kept_right and big_result == (507, 0, 0)
    done = out.get("status") == "valid" and out.get("sha256") == hashlib.sha256(data).hexdigest()
    figures.record("faults", "storage-full-mid-upload", survived=clear and kept_right and done
                   and not left, submissions=0, lost=0,
                   detail=f"{TMPFS_MB} MiB tmpfs as the data dir, {FREE_LEFT} bytes free; chunk "
                          f"{FIRST_CHUNK}-{total - 1} got {full_status} ({full_detail!r}); "
                          f"offset kept {offset}, part file {part_size} bytes; a 6 MiB chunk "
                          f"got {big_result[0]}, kept {big_result[2]} bytes; after freeing "
                          f"space resumed and the image is {out.get('status')}")
    assert clear, (full_status, full_detail)
    assert kept_right, (offset, part_size, row_bytes, row_status, big_result, big_detail)
    assert done and not left, (out, left)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_prediction_cannot_be_stored(private_stack: Any) -> None:
    """The predictions dir is a full tmpfs: each case fails with a clear reason (the server's
    storage, not the algorithm) and the submission ends; it never sticks in RUNNING."""
    from backend.models import CaseRunStatus
    from tests.reliability.helpers import runs

    env: ReliabilityEnv = private_stack[0]
    harness.configure(env)
    harness.truncate_all()
    harness.flush_redis(env)
    pred = env.data_dir / "predictions"
    pred.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(pred)], check=True)
    worker = None
    try:
        with (pred / "filler").open("wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        with session_scope() as s:
            phase = harness.seed_phase(s, env.data_dir, slug="pred-full", n_cases=2)
            sid = harness.submit(s, phase, "pred-full-user", "static-c").id
        worker = harness.start_worker(env, "rel-pred-full")  # no reaper: nothing to rescue it
        sub = harness.wait_done([sid], timeout_s=120)[sid]
        case_runs = [(r.status, r.error_message or "") for r in runs(sid)]
        left = [p.name for p in pred.rglob("*") if p.is_file() and p.name != "filler"]
    finally:
        if worker is not None:
            harness.stop_worker(worker)
        subprocess.run(["umount", str(pred)], check=True)
    clear = bool(case_runs) and all(st is CaseRunStatus.FAILED and "storage is full" in msg
                                    for st, msg in case_runs)
    cases = [(st.value, msg) for st, msg in case_runs]
    figures.record("faults", "storage-full-predictions", survived=clear and not left,
                   submissions=1, lost=0, detail=f"predictions dir a full 1 MiB tmpfs, no "
                   f"reaper; submission {sub.status.value}; cases {cases}; partial files {left}")
    assert clear, (sub.status, cases)
    assert not left, left


# ---------------------------------------------------------------- helpers for the tests below


@contextmanager
def _tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` (``size=1m``, ``nr_inodes=64``...), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _fill(path: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``path`` until about ``leave`` bytes are free (none: until
    ENOSPC); the filler file is returned, to free the space again."""
    filler = path / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
        f.write(b"\0" * max(_free(path) - leave, 0))
        while not leave:
            f.write(b"\0" * 65536)
    return filler


def _files(root: Path, *skip: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name not in skip)


@contextmanager
def _api_on(base: ReliabilityEnv, data_dir: Path, username: str
            ) -> Iterator[tuple[httpx.Client, ReliabilityEnv]]:
    """The API served from ``data_dir`` (on the private stack's database), with a client
    signed in as ``username``; settings point back at ``base`` after."""
    from backend.auth.service import create_token

    env = ReliabilityEnv(base.database_url, base.redis_url, data_dir)
    harness.configure(env)
    harness.truncate_all()
    api = stack.ApiServer(env)
    try:
        with session_scope() as s:
            _, token = create_token(s, harness.user(s, username), "t", None)
        api.start()
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60) as c:
            yield c, env
    finally:
        api.stop()
        harness.configure(base)


def _upload_rows() -> dict[str, tuple[str, int]]:
    with session_scope() as s:
        return {u.id: (u.status.value, u.received_bytes) for u in s.scalars(select(ImageUpload))}


# ---------------------------------------------------------------- creating and completing


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_storage_full_creating_an_upload(private_stack: Any, tmp_path: Path) -> None:
    """Creating an upload on a full disk: a 507 that says so, whether the free space is too
    small for the announced size (checked first) or the file cannot be created at all (no
    inode left: a real ENOSPC). Nothing is created, and an older upload that this request
    would have expired keeps its bytes (the expiry rolls back with the request)."""
    data = (EXAMPLES_OUT / "static-c.tar.gz").read_bytes()
    total = len(data)
    mnt = tmp_path / "data"
    with _tmpfs(mnt, "size=8m", "nr_inodes=64"), \
            _api_on(private_stack[0], mnt, "full-create") as (c, _):
        old = c.post("/api/images/uploads", json={"name": "old", "size_bytes": 1000}).json()
        r = c.put(f"/api/images/uploads/{old['id']}", content=b"x" * 500,
                  headers={"Content-Range": "bytes 0-499/1000"})
        assert r.status_code == 200, r.text
        with session_scope() as s:  # idle long enough to be expired by the next create
            s.execute(update(ImageUpload).where(ImageUpload.id == old["id"])
                      .values(updated_at=utcnow() - timedelta(days=30)))
        old_part = mnt / "uploads" / f"{old['id']}.part"
        # 1. Less free space than the upload announces.
        filler = _fill(mnt, leave=64 * 1024)
        r1 = c.post("/api/images/uploads", json={"name": "algo", "size_bytes": total})
        after1 = (_upload_rows(), old_part.stat().st_size)
        filler.unlink()
        # 2. Space, but no inode left for the upload's file.
        inodes = mnt / "inodes"
        inodes.mkdir()
        with contextlib.suppress(OSError):
            for i in range(1000):
                (inodes / str(i)).touch()
        r2 = c.post("/api/images/uploads", json={"name": "algo", "size_bytes": total})
        after2 = (_upload_rows(), old_part.stat().st_size, _files(mnt / "uploads"))
        shutil.rmtree(inodes)
        # 3. Room again: the upload is created (and the old one expired), sent and validated.
        r3 = c.post("/api/images/uploads", json={"name": "algo", "size_bytes": total})
        assert r3.status_code == 201, r3.text
        uid = r3.json()["id"]
        r = c.put(f"/api/images/uploads/{uid}", content=data,
                  headers={"Content-Range": f"bytes 0-{total - 1}/{total}"})
        assert r.status_code == 200, r.text
        out = c.post(f"/api/images/uploads/{uid}/complete").json()
        rows3 = _upload_rows()
        left = _files(mnt / "uploads")
    kept = {old["id"]: ("open", 500)}
    clear1 = r1.status_code == 507 and "free, not enough for this" in _detail(r1) \
        and "Nothing was created" in _detail(r1)
    clear2 = r2.status_code == 507 and "storage is full" in _detail(r2) \
        and "Nothing was saved" in _detail(r2)
    clean = after1 == (kept, 500) and after2 == (kept, 500, [old_part.name])
    done = out.get("status") == "valid" and out.get("sha256") == hashlib.sha256(data).hexdigest() \
        and rows3 == {old["id"]: ("aborted", 500), uid: ("complete", total)} and not left
    figures.record("faults", "storage-full-upload-create", survived=clear1 and clear2 and clean
                   and done, submissions=0, lost=0,
                   detail=f"8 MiB tmpfs as the data dir: 64 kB free -> {r1.status_code} "
                          f"({_detail(r1)!r}); no inode left -> {r2.status_code} "
                          f"({_detail(r2)!r}); nothing created, an expirable upload kept its "
                          f"bytes; with room again the image is {out.get('status')}")
    assert clear1, (r1.status_code, _detail(r1))
    assert clear2, (r2.status_code, _detail(r2))
    assert clean, (after1, after2)
    assert done, (out, rows3, left)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_storage_full_completing_an_upload(private_stack: Any, tmp_path: Path) -> None:
    """The image store (``images/``) is its own filesystem and full: ``complete`` validates
    the tarball, cannot store it (ENOSPC while copying across filesystems) and answers a 507
    that says so. No image row, no partial file; the upload keeps all its bytes, and
    ``complete`` succeeds once space is freed."""
    from backend.models import AlgorithmImage

    data = (EXAMPLES_OUT / "static-c.tar.gz").read_bytes()
    total, sha = len(data), hashlib.sha256(data).hexdigest()
    mnt = tmp_path / "data"
    with _tmpfs(mnt, "size=16m"), _tmpfs(mnt / "images", "size=1m"), \
            _api_on(private_stack[0], mnt, "full-complete") as (c, _):
        filler = _fill(mnt / "images")
        uid = c.post("/api/images/uploads", json={"name": "algo", "size_bytes": total}
                     ).json()["id"]
        r = c.put(f"/api/images/uploads/{uid}", content=data,
                  headers={"Content-Range": f"bytes 0-{total - 1}/{total}"})
        assert r.status_code == 200, r.text
        r1 = c.post(f"/api/images/uploads/{uid}/complete")
        upload = c.get(f"/api/images/uploads/{uid}").json()
        part = mnt / "uploads" / f"{uid}.part"
        part_ok = part.is_file() and hashlib.sha256(part.read_bytes()).hexdigest() == sha
        with session_scope() as s:
            images = len(s.scalars(select(AlgorithmImage)).all())
        partial = _files(mnt / "images", "filler")
        filler.unlink()  # space freed: complete again
        r2 = c.post(f"/api/images/uploads/{uid}/complete")
        out = r2.json()
        stored = _files(mnt / "images")
        left = _files(mnt / "uploads")
    clear = r1.status_code == 507 and "storage is full" in _detail(r1) \
        and "call complete again later" in _detail(r1)
    kept = (upload["status"], upload["received_bytes"], part_ok, images, partial) \
        == ("open", total, True, 0, [])
    done = r2.status_code == 201 and out.get("status") == "valid" and out.get("sha256") == sha \
        and len(stored) == 1 and not left
    figures.record("faults", "storage-full-upload-complete", survived=clear and kept and done,
                   submissions=0, lost=0,
                   detail=f"images/ a full 1 MiB tmpfs: complete -> {r1.status_code} "
                          f"({_detail(r1)!r}); upload kept {upload['status']} with "
                          f"{upload['received_bytes']} of {total} bytes, no image row, partial "
                          f"files {partial}; after freeing space complete -> {r2.status_code}, "
                          f"image {out.get('status')}")
    assert clear, (r1.status_code, _detail(r1))
    assert kept, (upload, part_ok, images, partial)
    assert done, (r2.status_code, out, stored, left)


# ---------------------------------------------------------------- provisioning inputs


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.parametrize("where", ["cache/uncompressed", "work"])
def test_storage_full_provisioning_inputs(private_stack: Any, where: str) -> None:
    """The worker cannot write a case's inputs: the cache of uncompressed inputs, or the run
    directories (``work/``, e.g. a tmpfs of its own), is a full filesystem. Each case fails
    at once with a reason that blames the server's storage (no reaper runs to rescue a stuck
    case), nothing half-written is left, and once space is freed the same cases run."""
    from backend.models import CaseRunStatus, Phase
    from tests.reliability.helpers import runs

    env: ReliabilityEnv = private_stack[0]
    harness.configure(env)
    harness.truncate_all()
    harness.flush_redis(env)
    name = {"cache/uncompressed": "storage-full-inputs-cache", "work": "storage-full-work-dir"}[
        where]
    worker = None
    with session_scope() as s:
        phase = harness.seed_phase(s, env.data_dir, slug=name, n_cases=2)
        phase_id = phase.id
    try:
        with _tmpfs(env.data_dir / where, "size=8m") as full:
            filler = _fill(full)
            with session_scope() as s:
                sid = harness.submit(s, s.get(Phase, phase_id), f"{name}-1", "static-c").id
            worker = harness.start_worker(env, f"rel-{name}")  # no reaper
            sub = harness.wait_done([sid], timeout_s=120)[sid]
            cases = [(r.status, r.error_message or "") for r in runs(sid)]
            left = _files(full, "filler")
            filler.unlink()
            with session_scope() as s:
                again = harness.submit(s, s.get(Phase, phase_id), f"{name}-2", "static-c").id
            sub2 = harness.wait_done([again], timeout_s=120)[again]
            cases2 = [r.status for r in runs(again)]
    finally:
        if worker is not None:
            harness.stop_worker(worker)
    clear = bool(cases) and all(st is CaseRunStatus.FAILED and "storage is full" in msg
                                and "inputs of this case" in msg for st, msg in cases)
    failed = sub.status.value == "failed" and "storage is full" in sub.error_message
    retried = sub2.status.value == "succeeded" and cases2 == [CaseRunStatus.SUCCEEDED] * 2
    figures.record("faults", name, survived=clear and failed and not left and retried,
                   submissions=2, lost=0,
                   detail=f"{where}/ a full 8 MiB tmpfs, no reaper: submission "
                          f"{sub.status.value}; cases {[(st.value, m) for st, m in cases][:1]}"
                          f"; files left {left}; after freeing space the same cases "
                          f"{sub2.status.value}")
    assert clear and failed, (sub.status, sub.error_message, cases)
    assert not left, left
    assert retried, (sub2.status, sub2.error_message, cases2)


# ---------------------------------------------------------------- the algorithm's output


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_storage_full_while_the_algorithm_writes(
    private_stack: Any, hostile_images: dict[str, Path]
) -> None:
    """The run directories' filesystem fills up while the algorithm writes /output, before
    its 64 MB /output cap: the case fails naming the server's storage, not the algorithm
    (whose own error is only "could not write"); no reaper is needed and nothing is left."""
    from backend.models import CaseRunStatus
    from tests.reliability.helpers import runs, submit_tarball

    env: ReliabilityEnv = private_stack[0]
    harness.configure(env)
    harness.truncate_all()
    harness.flush_redis(env)
    worker = None
    try:
        with _tmpfs(env.data_dir / "work", "size=4m") as work:
            with session_scope() as s:
                phase = harness.seed_phase(s, env.data_dir, slug="output-full", n_cases=1,
                                           case_time_limit_s=30, memory_mb=256)
                sid = submit_tarball(s, phase, "output-full-user", "fill-disk",
                                     hostile_images["fill-disk"])
            worker = harness.start_worker(env, "rel-output-full")  # no reaper
            sub = harness.wait_done([sid], timeout_s=120)[sid]
            (run,) = runs(sid)
            left = _files(work)
    finally:
        if worker is not None:
            harness.stop_worker(worker)
    message = run.error_message or ""
    clear = (run.status is CaseRunStatus.FAILED and "storage filled up" in message
             and "not a fault of the algorithm" in message)
    figures.record("faults", "storage-full-output", survived=clear and not left,
                   submissions=1, lost=0,
                   detail=f"work/ a 4 MiB tmpfs, /output cap 64 MB, no reaper: submission "
                          f"{sub.status.value}; case {run.status.value}: {message}; "
                          f"files left {left}")
    assert clear, (run.status, message)
    assert not left, left
