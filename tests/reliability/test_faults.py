"""Faults on a private stack (its own PostgreSQL, Redis and, for the engine faults, Docker
engine, restartable without touching the shared services): SIGKILL the worker mid-case, restart
Redis mid-run (its queue is lost: no persistence), restart PostgreSQL mid-run, restart or crash
the Docker engine while cases run in containers, the API restarted during an upload. Every
submission ends exactly once with its results, never stuck, never duplicated."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backend.db import session_scope
from backend.models import (
    AggregateResult,
    CaseRun,
    CaseRunStatus,
    Phase,
    Result,
    SubmissionStatus,
)
from tests.reliability import figures, stack
from tests.reliability.conftest import ReliabilityEnv
from tests.reliability.helpers import runs
from tests.worker import harness
from tests.worker.helpers import EXAMPLES_OUT
from worker import sandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]
N_SUBS, N_CASES = 4, 2


@pytest.fixture
def env(private_stack: Any) -> ReliabilityEnv:
    env = private_stack[0]
    harness.configure(env)
    harness.truncate_all()
    harness.flush_redis(env)
    return env


def _submit_slow(env: ReliabilityEnv, slug: str, n: int = N_SUBS) -> list[int]:
    from tests.worker.helpers import ensure_example

    ensure_example("slow")
    with session_scope() as s:
        phase = harness.seed_phase(s, env.data_dir, slug=slug, n_cases=N_CASES,
                                   case_time_limit_s=60, memory_mb=256)
        return [harness.submit(s, phase, f"{slug}-user{i}", "slow").id for i in range(n)]


def _wait_running(ids: list[int], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(r.status is CaseRunStatus.RUNNING for i in ids for r in runs(i)):
        assert time.monotonic() < deadline, "no case started"
        time.sleep(0.2)
    time.sleep(1.0)  # the container is up


def exactly_once(ids: list[int], n_cases: int = N_CASES) -> list[str]:
    """Problems with these submissions: not SUCCEEDED, missing or duplicated results."""
    problems = []
    subs = harness.wait_done(ids, timeout_s=240)
    with session_scope() as s:
        for sid, sub in subs.items():
            results = s.scalar(select(func.count()).select_from(Result)
                               .where(Result.submission_id == sid))
            aggs = s.scalar(select(func.count()).select_from(AggregateResult)
                            .where(AggregateResult.submission_id == sid))
            case_runs = s.scalar(select(func.count()).select_from(CaseRun)
                                 .where(CaseRun.submission_id == sid))
            if sub.status is not SubmissionStatus.SUCCEEDED:
                problems.append(f"#{sid} {sub.status.value}: {sub.error_message}")
            if (results, aggs, case_runs) != (n_cases, 1, n_cases):
                problems.append(f"#{sid}: {results} results, {aggs} aggregates, "
                                f"{case_runs} case runs")
    return problems


def _run_fault(env: ReliabilityEnv, name: str, fault: Any) -> None:
    ids = _submit_slow(env, name)
    worker = stack.start_worker(env, f"rel-{name}", concurrency=2)
    try:
        _wait_running(ids)
        detail = fault(worker)
        problems = exactly_once(ids)
        attempts = [r.attempts for i in ids for r in runs(i)]
    finally:
        harness.stop_worker(worker)
        for w in (f"rel-{name}", f"rel-{name}-2"):
            sandbox.remove_containers(**{sandbox.LABEL_WORKER: f"{w}@{_node()}"})
    figures.record("faults", name, survived=not problems, submissions=len(ids),
                   lost=sum("SUCCEEDED" not in p and "results" not in p for p in problems),
                   detail=f"{detail}; case attempts {sorted(attempts)}", problems=problems)
    assert not problems, problems


def _node() -> str:
    import os

    return os.uname().nodename


def test_worker_sigkilled_mid_case(env: ReliabilityEnv) -> None:
    def fault(worker: Any) -> str:
        harness.stop_worker(worker, signal.SIGKILL)
        globals()["_restarted"] = stack.start_worker(env, "rel-worker-sigkill-2")
        return "worker process group SIGKILLed mid-case and a new worker started"

    try:
        _run_fault(env, "worker-sigkill", fault)
    finally:
        restarted = globals().pop("_restarted", None)
        if restarted is not None:
            harness.stop_worker(restarted)


def test_redis_restarted_mid_run(env: ReliabilityEnv, private_stack: Any) -> None:
    redis: stack.PrivateRedis = private_stack[2]

    def fault(worker: Any) -> str:
        redis.restart(down_s=2)  # no persistence: every queued message is lost
        return "Redis stopped 2 s mid-run and restarted empty (queued messages lost)"

    _run_fault(env, "redis-restart", fault)


def test_postgres_restarted_mid_run(env: ReliabilityEnv, private_stack: Any) -> None:
    pg: stack.PrivatePostgres = private_stack[1]

    def fault(worker: Any) -> str:
        pg.restart(down_s=2)
        return "PostgreSQL stopped (fast) 2 s mid-run and restarted"

    _run_fault(env, "postgres-restart", fault)


@dataclass(frozen=True)
class EngineEnv(ReliabilityEnv):
    """The private stack, with the worker's docker-py pointed at a private engine."""

    docker_host: str = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), "DOCKER_HOST": self.docker_host}


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a Docker engine needs root")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_docker_engine_restarted_mid_case(env: ReliabilityEnv, sig: signal.Signals) -> None:
    """dockerd is stopped (SIGTERM: it stops every container first, as `systemctl restart
    docker` does) or killed (SIGKILL: the restarted engine stops the containers it finds)
    while cases run, and started again. The interrupted cases are run again: every
    submission succeeds exactly once, and the same worker serves the next submission."""
    name = {signal.SIGTERM: "docker-restart", signal.SIGKILL: "docker-crash"}[sig]
    engine = stack.PrivateDocker()  # the shared engine's containers are never touched
    worker = None
    try:
        ids = _submit_slow(env, name)
        worker = stack.start_worker(EngineEnv(env.database_url, env.redis_url, env.data_dir,
                                              engine.host), f"rel-{name}", concurrency=2)
        _wait_running(ids)
        hit = engine.managed_containers("status=running")  # the fault lands on these
        down_s = engine.restart(sig)
        problems = exactly_once(ids)
        attempts = sorted(r.attempts for i in ids for r in runs(i))
        with session_scope() as s:  # the worker goes on: one more submission after the fault
            phase = s.scalar(select(Phase).where(Phase.slug == name))
            assert phase is not None
            after = harness.submit(s, phase, f"{name}-after", "slow").id
        problems += exactly_once([after])
        alive = worker.poll() is None
        left = engine.managed_containers()
    finally:
        if worker is not None:
            harness.stop_worker(worker)
        engine.destroy()
    rerun = max(attempts) >= 2
    figures.record("faults", name, survived=bool(hit) and not problems and rerun and alive
                   and not left, submissions=len(ids) + 1,
                   lost=sum("SUCCEEDED" not in p and "results" not in p for p in problems),
                   detail=f"dockerd {sig.name} while {len(hit)} case containers ran, answering "
                          f"again {down_s:.1f} s later; case attempts {attempts}; next "
                          f"submission {'succeeded' if not problems else 'see problems'}; "
                          f"containers left {len(left)}", problems=problems)
    assert hit, "no container was running when the engine went down"
    assert not problems, problems
    assert rerun, f"no case was run again: {attempts}"
    assert alive, "the worker died"
    assert not left, left


def test_api_restarted_during_upload(env: ReliabilityEnv) -> None:
    from backend.auth.service import create_token

    data = (EXAMPLES_OUT / "static-c.tar.gz").read_bytes()
    total = len(data)
    with session_scope() as s:
        user = harness.user(s, "uploader")
        _, token = create_token(s, user, "t", None)
    h = {"Authorization": f"Bearer {token}"}
    api = stack.ApiServer(env)
    api.start()
    try:
        with httpx.Client(base_url=api.url, headers=h, timeout=30) as c:
            uid = c.post("/api/images/uploads", json={"name": "algo", "size_bytes": total}
                         ).json()["id"]
            half = total // 2
            r = c.put(f"/api/images/uploads/{uid}", content=data[:half],
                      headers={"Content-Range": f"bytes 0-{half - 1}/{total}"})
            assert r.status_code == 200, r.text
        api.kill()  # SIGKILL: no graceful shutdown
        api.start()
        with httpx.Client(base_url=api.url, headers=h, timeout=60) as c:
            got = c.get(f"/api/images/uploads/{uid}").json()["received_bytes"]
            r = c.put(f"/api/images/uploads/{uid}", content=data[got:],
                      headers={"Content-Range": f"bytes {got}-{total - 1}/{total}"})
            assert r.status_code == 200, r.text
            out = c.post(f"/api/images/uploads/{uid}/complete").json()
    finally:
        api.stop()
    ok = (got == total // 2 and out.get("status") == "valid"
          and out.get("sha256") == hashlib.sha256(data).hexdigest())
    from backend.config import settings

    left = [p for p in settings.uploads_dir.rglob("*") if p.is_file()] \
        if settings.uploads_dir.exists() else []
    figures.record("faults", "api-restart-during-upload", survived=ok and not left,
                   submissions=0, lost=0,
                   detail=f"API SIGKILLed after {got} of {total} bytes; resumed from {got}; "
                          f"image {out.get('status')}, sha256 matches: "
                          f"{out.get('sha256') == hashlib.sha256(data).hexdigest()}")
    assert ok and not left, (got, out, left)

