"""Fault: the server's storage fills up mid-upload, for real (a small tmpfs as the data dir,
not a mock). The chunk that hits ENOSPC gets a clear 507 (never a 500), nothing of it is kept
(the part file and the upload's offset stay at the chunk's start), and the upload resumes from
there and completes once space is freed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.db import session_scope
from backend.models import ImageUpload
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
            big = 6 * 1024 * 1024
            uid2 = c.post("/api/images/uploads", json={"name": "big", "size_bytes": big}
                          ).json()["id"]
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
