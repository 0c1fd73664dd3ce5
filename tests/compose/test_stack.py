"""The docker-compose stack, up for real: PostgreSQL, Redis, the S3 server, migrate, the API,
the eval worker and the GPU-queue worker (CPU override), all from images built offline.

A participant uploads and submits through the HTTP API and gets a leaderboard row; a second
worker host joins with the README's own command (scripts/worker_host.sh): its own Docker engine,
empty work directory and cache, no volume shared with the first; it takes cases, its
containers carry the device requests of the GPUs it was given; killing it mid-case loses
nothing. Throughput of one vs two worker containers on the same phase is measured (printed
and written to test-artifacts/compose-throughput.json).

The second host's engine is a private dockerd with a stand-in ``nvidia-container-runtime-hook``
on its PATH: Docker then accepts GPU device requests (it registers its NVIDIA driver when that
hook exists) and records them, which ``docker inspect`` shows; the stand-in hook does nothing,
so the containers run on the CPU. Everything else is the real thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.reliability.stack import PrivateDocker

pytestmark = [pytest.mark.compose, pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(os.environ.get("SYNTHARENA_EXAMPLES_OUT", ROOT / "build" / "examples"))
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "compose-password-1"  # test accounts
N_CASES = 6
SLOW_S = 5  # the `slow` example sleeps this long per case: a window to inspect and to kill


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if check and out.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} -> {out.returncode}\n{out.stdout[-3000:]}\n"
                    f"{out.stderr[-3000:]}")
    return out


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    tmp: Path
    api: str
    db_url: str
    hosts: list[str] = field(default_factory=list)  # extra worker containers started
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def compose(self) -> list[str]:
        return ["docker-compose", "-p", self.project, "-f", "docker-compose.yml",
                "-f", "docker-compose.cpu.yml"]

    @property
    def network(self) -> str:
        return f"{self.project}_default"

    def dc(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return _run([*self.compose, *args], env=self.env, timeout=timeout)

    def sql(self, query: str, **params: Any) -> list[Any]:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(query), params))
        finally:
            engine.dispose()


def _wait_health(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                return
        time.sleep(1)
    pytest.fail(f"the API at {url} did not become healthy in {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose")
    tmp = Path(tempfile.mkdtemp(prefix="sa-compose-"))
    project = f"sacompose{os.getpid()}"
    api_port = _free_port()
    pg_port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST")},
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "BASE_IMAGE": os.environ.get("BASE_IMAGE", "syntharena/stack-base:local"),
        "POSTGRES_IMAGE": os.environ.get("POSTGRES_IMAGE", "syntharena/postgres:15-local"),
        "REDIS_IMAGE": os.environ.get("REDIS_IMAGE", "syntharena/redis:7-local"),
        "SECRET_KEY": "compose-test-secret-7f3a9c1d2e",
        "ADMIN_EMAILS": '["organizer@compose.local"]',
        "API_PORT": str(api_port), "POSTGRES_PORT": str(pg_port),
        "REDIS_PORT": str(_free_port()), "S3_PORT": str(_free_port()),
        "GPU_DATA_DIR": str(tmp / "host1-gpu"), "CPU_DATA_DIR": str(tmp / "host1-cpu"),
        # A killed worker's case is requeued after this long without a live task.
        "REAPER_GRACE_S": "20", "REAPER_INTERVAL_S": "5", "WORKER_STOP_GRACE": "5s",
    }
    s = Stack(project, env, tmp, f"http://127.0.0.1:{api_port}",
              f"postgresql+psycopg://syntharena:syntharena@127.0.0.1:{pg_port}/syntharena")
    try:
        s.dc("build")
        s.dc("up", "-d")
        _wait_health(s.api)
        yield s
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        logs = subprocess.run([*s.compose, "logs", "--no-color", "--tail", "300"], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        (ARTIFACTS / "compose-stack.log").write_text(logs.stdout + logs.stderr)
        for name in s.hosts:
            host_logs = subprocess.run(["docker", "logs", "--tail", "300", name],
                                       capture_output=True, text=True)
            (ARTIFACTS / f"compose-{name}.log").write_text(host_logs.stdout + host_logs.stderr)
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run([*s.compose, "down", "-v", "--remove-orphans", "-t", "5"], cwd=ROOT,
                       env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


# --- the participant's and organiser's side: the public HTTP API ----------------------------

def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 400, f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text}"
    return r.json() if r.content else {}


def _client(stack: Stack, username: str) -> httpx.Client:
    c = httpx.Client(base_url=stack.api, timeout=600)
    r = c.post("/api/auth/register", json={"email": f"{username}@compose.local",
                                           "username": username, "password": PASSWORD})
    if r.status_code >= 400:  # registered by an earlier test of this module
        _ok(c.post("/api/auth/login", json={"username": username, "password": PASSWORD}))
    return c


def _upload(c: httpx.Client, tarball: Path, name: str) -> int:
    size = tarball.stat().st_size
    up = _ok(c.post("/api/images/uploads", json={"name": name, "size_bytes": size}))
    _ok(c.put(f"/api/images/uploads/{up['id']}", content=tarball.read_bytes(),
              headers={"Content-Range": f"bytes 0-{size - 1}/{size}",
                       "Content-Type": "application/octet-stream"}))
    image = _ok(c.post(f"/api/images/uploads/{up['id']}/complete"))
    assert image["status"] == "valid", image
    return int(image["id"])


@dataclass
class Arena:
    org: httpx.Client
    alice: httpx.Client
    image_id: int


@pytest.fixture(scope="module")
def arena(stack: Stack) -> Arena:
    """A challenge with one phase of phantom pelvis cases (imported by the eval worker into
    object storage) and alice's uploaded `slow` algorithm."""
    org = _client(stack, "organizer")
    _ok(org.post("/api/challenges", json={"slug": "cmp", "title": "Compose",
                                          "description": "compose stack test"}))
    _ok(org.post("/api/datasets", json={"slug": "cmp-pelvis", "title": "Phantom pelvis",
                                        "challenge": "cmp"}))
    job = _ok(org.post("/api/datasets/cmp-pelvis/imports", json={
        "source": "phantom", "anatomy": "pelvis", "cases": N_CASES, "size": "small",
        "seed": 1, "plans": False}))
    deadline = time.monotonic() + 600
    while job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(2)
        job = _ok(org.get(f"/api/datasets/cmp-pelvis/imports/{job['id']}"))
    assert job["status"] == "succeeded", job
    _ok(org.post("/api/challenges/cmp/phases", json={
        "slug": "pelvis", "title": "Pelvis", "kind": "test", "dataset": "cmp-pelvis",
        "is_open": True, "case_time_limit_s": 120, "memory_mb": 1024, "cpus": 1.0,
        "batch_size": 1, "submissions_per_period": 100, "show_case_logs": True,
        "show_case_results": True}))
    alice = _client(stack, "alice")
    _ok(alice.post("/api/challenges/cmp/register"))
    tarball = EXAMPLES / "slow.tar.gz"
    assert tarball.is_file(), f"{tarball} is missing: bash examples/algorithms/build.sh slow"
    return Arena(org, alice, _upload(alice, tarball, "alice/slow"))


def _submit(arena: Arena, comment: str) -> int:
    sub = _ok(arena.alice.post("/api/challenges/cmp/phases/pelvis/submissions",
                               json={"image_id": arena.image_id, "comment": comment}))
    return int(sub["id"])


def _wait_done(arena: Arena, sub_id: int, timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sub: dict[str, Any] = _ok(arena.org.get(f"/api/submissions/{sub_id}"))
        if sub["status"] in ("succeeded", "failed", "cancelled"):
            return sub
        time.sleep(1)
    pytest.fail(f"submission {sub_id} not done in {timeout_s:.0f} s: {sub}")


def _case_errors(stack: Stack, sub_id: int) -> list[Any]:
    return stack.sql("SELECT status, attempts, error_message FROM case_runs "
                     "WHERE submission_id = :s", s=sub_id)


def _mean_container_s(stack: Stack, sub_id: int) -> float:
    """Mean time a case's container ran (the rest of a case is the platform's overhead)."""
    [(mean,)] = stack.sql("SELECT avg(duration_s) FROM case_runs WHERE submission_id = :s",
                          s=sub_id)
    return round(float(mean), 2)


def _cases_per_min(stack: Stack, sub_id: int) -> float:
    """Cases per minute from the first case started to the last one finished."""
    [(n, first, last)] = stack.sql(
        "SELECT count(*), min(started_at), max(finished_at) FROM case_runs "
        "WHERE submission_id = :s AND status = 'succeeded'", s=sub_id)
    return round(float(n) / float((last - first).total_seconds()) * 60, 2)


# --- a second worker host -------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_engine() -> Iterator[PrivateDocker]:
    """The second host's Docker engine, with a stand-in NVIDIA hook (see the module doc)."""
    hook_dir = Path(tempfile.mkdtemp(prefix="sa-fakegpu-"))
    hook = hook_dir / "nvidia-container-runtime-hook"
    hook.write_text("#!/bin/sh\ncat >/dev/null\nexit 0\n")
    hook.chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{hook_dir}:{path}"  # dockerd looks the hook up at its start
    try:
        engine = PrivateDocker()
    finally:
        os.environ["PATH"] = path
    yield engine
    engine.destroy()
    shutil.rmtree(hook_dir, ignore_errors=True)


def _host_env_file(stack: Stack, path: Path) -> Path:
    """The README's host file (Scaling out): the stack's addresses and the data keys only.
    Here the host joins the stack's Docker network, so the addresses are service names."""
    e = stack.env
    path.write_text("\n".join([
        "SYNTHARENA_DATABASE_URL=postgresql+psycopg://syntharena:syntharena@postgres:5432/"
        "syntharena",
        "SYNTHARENA_REDIS_URL=redis://redis:6379/0",
        f"SYNTHARENA_SECRET_KEY={e['SECRET_KEY']}",
        "SYNTHARENA_STORAGE_BACKEND=s3",
        "SYNTHARENA_S3_ENDPOINT_URL=http://s3:9000",
        "SYNTHARENA_S3_BUCKET=syntharena",
        "SYNTHARENA_S3_REGION=us-east-1",
        "SYNTHARENA_S3_ACCESS_KEY_ID=syntharena-data",
        "SYNTHARENA_S3_SECRET_ACCESS_KEY=syntharena-data-secret",
        "SYNTHARENA_GT_S3_BUCKET=syntharena-gt",
        "NO_PROXY=s3,postgres,redis",
        "",
    ]))
    return path


def _add_host(stack: Stack, engine: PrivateDocker, name: str, gpu_ids: list[str]) -> Path:
    """`bash scripts/worker_host.sh host.env`, as README "Scaling out" says; returns the
    host's data directory (new and empty: its object cache and work/)."""
    data = stack.tmp / f"{name}-data"
    assert not data.exists()
    env_file = _host_env_file(stack, stack.tmp / f"{name}.env")
    stack.hosts.append(name)
    _run(["bash", "scripts/worker_host.sh", str(env_file)], env={
        "PATH": os.environ["PATH"], "NAME": name, "GPU_IDS": json.dumps(gpu_ids),
        "DATA_DIR": str(data), "NETWORK": stack.network, "DOCKER_SOCKET": str(engine.sock),
        "STOP_TIMEOUT": "5"})
    deadline = time.monotonic() + 180
    while " ready." not in _logs(name):  # Celery's line once it consumes (imports take a while)
        assert time.monotonic() < deadline, f"{name} did not start:\n{_logs(name)[-3000:]}"
        time.sleep(1)
    mounts = json.loads(_run(["docker", "inspect", "-f", "{{json .Mounts}}", name]).stdout)
    # Nothing shared with the first host: its own data dir (cache, work), its own engine.
    assert {m["Destination"] for m in mounts} == {"/var/lib/syntharena", "/var/run/docker.sock"}
    first = json.loads(_run(["docker", "inspect", "-f", "{{json .Mounts}}",
                             f"{stack.project}_worker-gpu_1"]).stdout)
    shared = {m["Source"] for m in mounts} & {m["Source"] for m in first}
    assert shared <= {"/var/run/docker.sock"}, shared  # that one: the first host's engine
    assert engine.sock.resolve() != Path("/var/run/docker.sock").resolve()
    return data


def _algorithm_containers(engine: PrivateDocker) -> list[dict[str, Any]]:
    ids = engine.managed_containers("status=running")
    if not ids:
        return []
    out = engine.docker("inspect", *ids)
    return json.loads(out.stdout) if out.returncode == 0 else []  # one may have just gone


def _device_ids(container: dict[str, Any]) -> list[str]:
    requests = container["HostConfig"].get("DeviceRequests") or []
    assert all(r["Capabilities"] == [["gpu"]] for r in requests), requests
    return [d for r in requests for d in r["DeviceIDs"]]


def _logs(name: str) -> str:
    out = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    return out.stdout + out.stderr


def _served_cases(name: str) -> int:
    return sum("Task cases.run[" in line and "succeeded" in line
               for line in _logs(name).splitlines())


# --- the tests (in order: they build on one stack) ------------------------------------------

def test_submission_reaches_the_leaderboard(stack: Stack, arena: Arena) -> None:
    """One GPU-queue worker: upload, submit, a leaderboard row."""
    sub_id = _submit(arena, "one worker")
    sub = _wait_done(arena, sub_id)
    assert sub["status"] == "succeeded", (sub["error_message"], _case_errors(stack, sub_id))
    assert (sub["cases_done"], sub["cases_total"]) == (N_CASES, N_CASES)
    board = _ok(arena.alice.get("/api/challenges/cmp/phases/pelvis/leaderboard"))
    [row] = [r for r in board["rows"] if r["username"] == "alice"]
    assert row["values"]["mae"] is not None and row["values"]["mae"] >= 0
    stack.measured["one_worker_cases_per_min"] = _cases_per_min(stack, sub_id)
    stack.measured["one_worker_mean_container_s"] = _mean_container_s(stack, sub_id)


def test_second_host_joins_and_takes_pinned_cases(stack: Stack, arena: Arena,
                                                  gpu_engine: PrivateDocker) -> None:
    """A second host (own engine, data dir and cache) joins with the README's command and
    runs cases; each of its containers requests exactly the GPU it was given."""
    data = _add_host(stack, gpu_engine, f"{stack.project}-host2", ["3"])
    sub_id = _submit(arena, "two workers")
    seen: list[list[str]] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        seen += [_device_ids(c) for c in _algorithm_containers(gpu_engine)]
        sub = _ok(arena.org.get(f"/api/submissions/{sub_id}"))
        if sub["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert sub["status"] == "succeeded", (sub["error_message"], _case_errors(stack, sub_id))
    assert _served_cases(f"{stack.project}-host2") >= 1, "the second host took no case"
    assert seen and all(ids == ["3"] for ids in seen), seen
    # It read the inputs from object storage into its own cache.
    assert any((data / "cache" / "objects").rglob("*")), "the second host cached nothing"
    stack.measured["two_workers_cases_per_min"] = _cases_per_min(stack, sub_id)
    stack.measured["two_workers_cases_on_host2"] = _served_cases(f"{stack.project}-host2")
    stack.measured["two_workers_mean_container_s"] = _mean_container_s(stack, sub_id)


def test_each_child_is_pinned_to_its_own_gpu(stack: Stack, arena: Arena,
                                             gpu_engine: PrivateDocker) -> None:
    """A host with two GPUs runs two children; each child's containers get its own GPU."""
    stack.dc("stop", "-t", "30", "worker-gpu")
    subprocess.run(["docker", "stop", "-t", "30", f"{stack.project}-host2"], capture_output=True)
    _add_host(stack, gpu_engine, f"{stack.project}-host3", ["5", "7"])
    sub_id = _submit(arena, "two GPUs")
    concurrent: list[list[list[str]]] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        running = [_device_ids(c) for c in _algorithm_containers(gpu_engine)]
        if running:
            concurrent.append(running)
        sub = _ok(arena.org.get(f"/api/submissions/{sub_id}"))
        if sub["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
    assert sub["status"] == "succeeded", (sub["error_message"], _case_errors(stack, sub_id))
    assert all(len(ids) == 1 for snap in concurrent for ids in snap), concurrent
    assert {ids[0] for snap in concurrent for ids in snap} == {"5", "7"}, concurrent
    # Two containers at once never share a GPU.
    pairs = [snap for snap in concurrent if len(snap) == 2]
    assert pairs and all(a != b for a, b in pairs), concurrent


def test_a_worker_killed_mid_case_loses_nothing(stack: Stack, arena: Arena,
                                                gpu_engine: PrivateDocker) -> None:
    """Host 3 is killed while its containers run; host 2 (started again) and the reaper
    finish the submission: every case succeeds, the interrupted ones on a second attempt."""
    subprocess.run(["docker", "start", f"{stack.project}-host2"], check=True,
                   capture_output=True)
    sub_id = _submit(arena, "kill a worker")
    deadline = time.monotonic() + 300
    while not _algorithm_containers(gpu_engine):
        assert time.monotonic() < deadline, "no case started"
        time.sleep(0.3)
    _run(["docker", "kill", f"{stack.project}-host3"])
    sub = _wait_done(arena, sub_id, timeout_s=900)
    assert sub["status"] == "succeeded", (sub["error_message"], _case_errors(stack, sub_id))
    assert (sub["cases_done"], sub["cases_total"]) == (N_CASES, N_CASES)
    attempts = [a for (a,) in stack.sql(
        "SELECT attempts FROM case_runs WHERE submission_id = :s", s=sub_id)]
    assert len(attempts) == N_CASES and max(attempts) >= 2, attempts
    results = stack.sql("SELECT count(*) FROM results WHERE submission_id = :s", s=sub_id)
    assert results[0][0] == N_CASES


def test_report_throughput(stack: Stack) -> None:
    """Not a gate: writes what the earlier tests measured (cases/min, same phase)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "compose-throughput.json").write_text(json.dumps(stack.measured, indent=2))
    print(json.dumps(stack.measured), file=sys.stderr)
    assert stack.measured.get("one_worker_cases_per_min", 0) > 0
