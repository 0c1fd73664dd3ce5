"""A background dataset import on the real stack: time per case, peak memory of the API and of
the worker, and the API's responsiveness (health checks) while the import runs.

    .venv/bin/python benchmarks/dataset_import.py [--cases 6] [--size realistic] [--plans]

Starts the API (uvicorn) and one Celery worker (queue ``eval``, one child) as subprocesses on a
scratch database, queues an import of generated pelvis phantoms through ``POST
/api/datasets/{slug}/imports``, polls ``/api/health`` every 0.1 s and the job every 0.25 s until
it ends. Peak memory is each process's high-water mark (``VmHWM`` in /proc; Linux), the
worker's over its whole process tree. Per-case time is the gap between two increments of
``cases_done``; the 60-case figure extrapolates the mean. Needs PostgreSQL and Redis
(scripts/services.sh, or ``source /work/instance.sh K``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SYNTHARENA_DEV_MODE", "1")  # a scratch stack: the dev secret is fine

import httpx

from backend.auth.service import create_token
from backend.db import session_scope
from backend.models import Dataset, User
from tests.worker import harness

TERMINAL = ("succeeded", "failed")


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB (empty when it has gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines)
            if k in ("VmRSS", "VmHWM")}


def _tree(pid: int) -> list[int]:
    """The process and its descendants (prefork children do the worker's work)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


class PeakMemory:
    """The largest high-water mark seen in a process tree (a child that exits keeps its
    last sample)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib = pid, 0

    def sample(self) -> None:
        for p in _tree(self.pid):
            self.peak_kib = max(self.peak_kib, _proc_status(p).get("VmHWM", 0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _latency_ms(api: httpx.Client) -> float:
    t0 = time.perf_counter()
    api.get("/api/health").raise_for_status()
    return 1000 * (time.perf_counter() - t0)


def _seed(slug: str) -> str:
    with session_scope() as s:
        admin = User(email="bench@example.org", username="bench", password_hash="x",
                     is_admin=True)
        s.add(admin)
        s.flush()
        s.add(Dataset(slug=slug, title="Import benchmark", created_by_id=admin.id))
        _, secret = create_token(s, admin, "bench", None)
    return secret


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="syntharena-bench-import-"))
    (data_dir / "data").mkdir()
    env = harness.setup("syntharena_bench_import", data_dir / "data", redis_db=12)
    token = _seed("bench")
    port = _free_port()
    api_log = open(data_dir / "api.log", "ab")  # noqa: SIM115
    api_proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "backend.main:app", "--port", str(port),
         "--log-level", "warning"],
        cwd=harness.ROOT, env=env.env(), stdout=api_log, stderr=subprocess.STDOUT)
    worker = harness.start_worker(env, "bench-import", concurrency=1, queues=("eval",))
    api_mem, worker_mem = PeakMemory(api_proc.pid), PeakMemory(worker.pid)
    try:
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
        deadline = time.monotonic() + 60
        while True:
            try:
                _latency_ms(api)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        harness.wait_ready("bench-import")
        if args.worker_nice:
            for pid in _tree(worker.pid):
                os.setpriority(os.PRIO_PROCESS, pid, args.worker_nice)
        idle = [_latency_ms(api) for _ in range(50)]
        api_mem.sample()
        api_before_kib = api_mem.peak_kib
        t0 = time.perf_counter()
        r = api.post("/api/datasets/bench/imports", json={
            "source": "phantom", "anatomy": args.anatomy, "cases": args.cases,
            "size": args.size, "plans": args.plans})
        post_ms = 1000 * (time.perf_counter() - t0)
        r.raise_for_status()
        job = r.json()
        during: list[float] = []
        case_done_at: list[float] = []
        started = time.perf_counter()
        last_poll, done = 0.0, 0
        while job["status"] not in TERMINAL:
            during.append(_latency_ms(api))
            api_mem.sample()
            worker_mem.sample()
            now = time.perf_counter()
            if now - last_poll >= 0.25:
                job = api.get(f"/api/datasets/bench/imports/{job['id']}").json()
                last_poll = now
                case_done_at += [now] * (job["cases_done"] - done)
                done = job["cases_done"]
            time.sleep(0.1)
        total_s = time.perf_counter() - started
        t0 = time.perf_counter()  # the first request pays for the broker connection
        api.post("/api/datasets/bench/imports", json={
            "source": "phantom", "anatomy": args.anatomy, "cases": 1}).raise_for_status()
        post_warm_ms = 1000 * (time.perf_counter() - t0)
        gaps = [b - a for a, b in zip([started, *case_done_at], case_done_at, strict=False)]
        per_case = statistics.mean(gaps) if gaps else float("nan")
        return {
            "cases": args.cases, "anatomy": args.anatomy, "size": args.size,
            "plans": args.plans, "worker_nice": args.worker_nice, "status": job["status"],
            "errors": job["errors"],
            "post_ms": round(post_ms, 1), "post_warm_ms": round(post_warm_ms, 1),
            "total_s": round(total_s, 1),
            "per_case_s": {"mean": round(per_case, 2), "min": round(min(gaps), 2),
                           "max": round(max(gaps), 2)} if gaps else None,
            "extrapolated_60_cases_s": round(60 * per_case),
            "bytes_total_mib": round(job["bytes_done"] / 2**20, 1),
            "bytes_per_case_mib": round(job["bytes_done"] / 2**20 / max(1, args.cases), 1),
            "api_peak_rss_mib": round(api_mem.peak_kib / 1024, 1),
            "api_peak_rss_before_import_mib": round(api_before_kib / 1024, 1),
            "worker_peak_rss_mib": round(worker_mem.peak_kib / 1024, 1),
            "health_idle_ms": {"p50": round(_pct(idle, 0.5), 1),
                               "p99": round(_pct(idle, 0.99), 1)},
            "health_during_import_ms": {"n": len(during), "p50": round(_pct(during, 0.5), 1),
                                        "p99": round(_pct(during, 0.99), 1),
                                        "max": round(max(during), 1) if during else None},
        }
    finally:
        harness.stop_worker(worker)
        api_proc.terminate()
        api_proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--anatomy", default="pelvis", choices=["pelvis", "brain"])
    parser.add_argument("--size", default="realistic", choices=["small", "medium", "realistic"])
    parser.add_argument("--plans", action="store_true", help="optimise treatment plans too")
    parser.add_argument("--worker-nice", type=int, default=0,
                        help="renice the whole worker too (the task runs the import "
                        "niced already: worker.tasks.IMPORT_NICE)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    with harness.settings_restored():
        result = run(args)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
