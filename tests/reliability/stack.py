"""A private stack for fault and load tests: PostgreSQL (initdb into a temp dir, its own port)
and Redis (its own port) that the tests may stop and restart without touching the shared
services, Celery workers (with the periodic reaper) and the API server (uvicorn)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from backend.cli import WORKER_HEALTHCHECK_S
from tests.worker import harness

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def _as_postgres(cmd: list[str]) -> list[str]:
    return cmd if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *cmd]


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        # Its own top-level temp dir: the postgres user cannot enter pytest's (root-only) dirs.
        root = Path(tempfile.mkdtemp(prefix="syntharena-pg-"))
        self.root = root
        self.dir = root / "pgdata"
        self.log = root / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.dir), "-U",
                                     "postgres", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-l",
                                     str(self.log), "-w", *args]), check=True,
                       capture_output=True)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k /tmp -c max_connections=300 -c fsync=off", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "stop")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, down_s: float = 2.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


class PrivateRedis:
    def __init__(self, root: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.root = root
        self.persistent = persistent
        root.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.root), "--save", "", "--appendonly", "yes" if self.persistent else "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)

    def restart(self, down_s: float = 2.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


class PrivateDocker:
    """A Docker engine of the test's own (data root, exec root, socket and bridge), started the
    way scripts/services.sh starts the shared one (``nohup dockerd >LOG 2>&1 &``, then wait
    until ``docker info`` answers), so a test can kill and restart it without stopping the
    containers of other suites on the shared engine.

    Its bridge is one of its own: ``--bridge none`` would make dockerd delete the host's
    ``docker0``, the shared engine's bridge. No iptables rules (they would clash with the
    shared engine's); the sandbox uses ``--network none`` anyway."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sa-dockerd-"))
        self.sock = self.root / "docker.sock"
        self.log = self.root / "dockerd.log"
        n = os.getpid() % 250 + 1
        self.bridge = f"sa-dkr{os.getpid() % 100000}"
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", f"10.254.{n}.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def host(self) -> str:
        """The DOCKER_HOST that points docker-py and the CLI at this engine."""
        return f"unix://{self.sock}"

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "-H", self.host, *args], capture_output=True,
                              text=True, timeout=120)

    def answers(self) -> bool:
        try:
            return self.docker("info").returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self, timeout_s: float = 60) -> None:
        log = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root",
             str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
             "-H", self.host, "--bridge", self.bridge, "--iptables=false",
             "--ip-masq=false", "--ip6tables=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    def _containerd_pid(self) -> int | None:
        try:
            pid = int((self.root / "exec" / "containerd" / "containerd.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if str(self.root).encode() in cmdline else None

    def kill(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> None:
        """Signal dockerd and wait until it and its containerd are gone (SIGTERM: it stops its
        containers first; SIGKILL: the kernel kills its containerd too, and the new dockerd
        must not find that one still unreaped and wait for it)."""
        containerd = self._containerd_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while containerd is not None and Path(f"/proc/{containerd}").exists() \
                and time.monotonic() < deadline:
            time.sleep(0.2)

    def restart(self, sig: int = signal.SIGTERM, down_s: float = 1.0) -> float:
        """Kill dockerd with ``sig`` and start it again; seconds until it answered again."""
        t0 = time.monotonic()
        self.kill(sig)
        time.sleep(down_s)
        self.start()
        return time.monotonic() - t0

    def managed_containers(self, *filters: str) -> list[str]:
        """Ids of the platform's containers on this engine (``status=running``: live ones)."""
        args = [a for f in filters for a in ("--filter", f)]
        out = self.docker("ps", "-aq", "--filter", "label=org.syntharena.managed=true", *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    def destroy(self) -> None:
        """Stop it (its containers with it) and remove its files, mounts and bridge."""
        if not self.answers():  # started again, so that it removes its containers itself
            with contextlib.suppress(RuntimeError):
                self.start(timeout_s=30)
        if self.answers():
            ids = self.docker("ps", "-aq").stdout.split()
            if ids:
                self.docker("rm", "-f", *ids)
        containerd = self._containerd_pid()
        self.kill(signal.SIGTERM)
        if containerd is not None and self._containerd_pid() == containerd:
            with contextlib.suppress(ProcessLookupError):  # it outlived dockerd
                os.kill(containerd, signal.SIGKILL)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mnt in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


def start_worker(env: harness.PipelineEnv, name: str, *, concurrency: int = 2,
                 beat: bool = True, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """A Celery worker on all queues; with ``beat`` it also runs the periodic reaper."""
    log = open(log_path or env.data_dir / f"worker-{name}.log", "ab")  # noqa: SIM115
    args = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", "images,gpu,eval", "-c", str(concurrency), "-n", f"{name}@%h",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    if beat:
        args += ["-B", "-s", str(env.data_dir / f"beat-{name}")]
    return subprocess.Popen(args, cwd=ROOT, env={**env.env(), "SYNTHARENA_REAPER_INTERVAL_S": "2"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class ApiServer:
    """``uvicorn backend.main:app`` on a free loopback port."""

    def __init__(self, env: harness.PipelineEnv, workers: int = 1) -> None:
        self.env = env
        self.port = free_port()
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.env.data_dir / "api.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers), "--no-access-log",
             "--log-level", "info",
             # like `syntharena server serve`: a busy worker is not killed as "hung"
             "--timeout-worker-healthcheck", str(WORKER_HEALTHCHECK_S)],
            cwd=ROOT, env=self.env.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/auth/me", timeout=1).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, (self.env.data_dir / "api.log").read_text()[-2000:]
            time.sleep(0.2)
        raise TimeoutError("the API did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
