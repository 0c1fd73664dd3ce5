"""Upload a multi-GB `docker save` tarball over loopback to uvicorns this script starts:
the current code beside a reference revision (the code before issue #20's upload rework),
in the same run, alternating, so a drifting machine hits both alike.

Each side is its own server (own checkout, data directory and SQLite database) driven by its
own CLI's upload loop (``backend.cli._send``, in a subprocess from that checkout) with that
CLI's default chunk size. Reports upload throughput, validation time and each server's peak
memory growth (resident set size over its idle baseline); goal (issue #3): growth under
100 MB whatever the size; goal (issue #20): 300 MB/s.

    .venv/bin/python benchmarks/upload.py --size-gb 3 --rounds 2
    .venv/bin/python benchmarks/upload.py --reference none   # the current code only
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
GOAL_MB = 100
# The last revision before issue #20's upload rework: the reference side.
REFERENCE_REV = "771b92d"
BLOCK = 1 << 20


class _Stream(io.RawIOBase):
    """A read-only stream over an iterator of bytes (feeds tarfile without a temp file)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buf = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        while not self.buf:
            try:
                self.buf = next(self.chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self.buf))
        b[:n], self.buf = self.buf[:n], self.buf[n:]
        return n


def write_tarball(path: Path, size: int) -> None:
    """An image tarball whose one layer holds ``size`` bytes, written in one streaming pass."""
    block = os.urandom(BLOCK)
    payload = tarfile.TarInfo("app/weights.bin")
    payload.size = size
    header = payload.tobuf(format=tarfile.GNU_FORMAT)
    pad = (-size) % 512
    body_len = len(header) + size + pad + 1024
    layer_len = body_len + (-body_len) % tarfile.RECORDSIZE
    digest = hashlib.sha256()

    def layer_chunks() -> Iterator[bytes]:
        def emit(data: bytes) -> bytes:
            digest.update(data)
            return data

        yield emit(header)
        left = size
        while left > 0:
            n = min(left, BLOCK)
            yield emit(block[:n])
            left -= n
        yield emit(b"\0" * (pad + 1024 + layer_len - body_len))

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("layer0/layer.tar")
        info.size = layer_len
        tar.addfile(info, io.BufferedReader(_Stream(layer_chunks()), BLOCK))  # type: ignore[type-var]
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": {"User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
        }).encode()
        name = hashlib.sha256(config).hexdigest() + ".json"
        for member, data in ((name, config), ("manifest.json", json.dumps([{
                "Config": name, "RepoTags": ["bench:1"], "Layers": ["layer0/layer.tar"]}]
                ).encode())):
            ti = tarfile.TarInfo(member)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRSS(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)


def prepare(tree: Path, data_dir: Path) -> tuple[dict[str, str], str]:
    """Migrate an SQLite database (the embedded default) and create a user with a token."""
    db_url = f"sqlite:///{data_dir / 'bench.db'}"
    env = {**os.environ, "SYNTHARENA_DATA_DIR": str(data_dir), "PYTHONPATH": str(tree),
           "SYNTHARENA_DATABASE_URL": db_url, "SYNTHARENA_DEV_MODE": "1"}  # a scratch server
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=tree, env=env,
                   check=True, capture_output=True)
    code = (
        "from backend.db import session_scope\n"
        "from backend.models import User\n"
        "from backend.auth.service import create_token\n"
        "with session_scope() as s:\n"
        "    u = User(email='b@example.org', username='bench', password_hash='x')\n"
        "    s.add(u); s.flush()\n"
        "    print(create_token(s, u, 'bench', None)[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True,
                         capture_output=True, text=True)
    return env, out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Runs in a subprocess from one side's checkout: that side's CLI upload loop, timed alone
# (interpreter start-up and imports excluded).
CLIENT = """
import sys, time
from pathlib import Path
import httpx
from backend import cli
base, token, upload_id, tarball, size = sys.argv[1:6]
chunk = int(sys.argv[6]) if len(sys.argv) > 6 else cli.CHUNK
with httpx.Client(base_url=base, headers={"Authorization": "Bearer " + token},
                  timeout=3600) as c:
    t, cpu = time.perf_counter(), time.process_time()
    cli._send(c, Path(tarball), upload_id, 0, int(size), chunk)
    print("SECONDS", time.perf_counter() - t, chunk, time.process_time() - cpu, file=sys.stderr)
"""


class Side:
    """One server (a checkout of the code) and its CLI."""

    def __init__(self, label: str, tree: Path, work: Path, chunk: int | None) -> None:
        self.label, self.tree, self.chunk = label, tree, chunk
        data_dir = work / f"data-{label}"
        data_dir.mkdir()
        self.env, token = prepare(tree, data_dir)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.token = token
        self.server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"], cwd=tree, env=self.env)
        self.client = httpx.Client(base_url=self.base, timeout=3600,
                                   headers={"Authorization": f"Bearer {token}"})
        for _ in range(300):
            try:
                if self.client.get("/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        self.client.get("/api/auth/me").raise_for_status()
        self.results: list[dict[str, float]] = []

    def upload(self, tarball: Path) -> str:
        c, total = self.client, tarball.stat().st_size
        # The tarball just written and the previous round's image are still being written
        # back (GBs of dirty pages): without this, the upload's own writes were throttled by
        # the kernel while the disk caught up with them (measured 229-278 MB/s for the current
        # side, 507-571 MB/s after a sync, in runs minutes apart).
        os.sync()
        baseline, cpu = rss_mb(self.server.pid), cpu_s(self.server.pid)
        monitor = PeakRSS(self.server.pid)
        monitor.start()
        up = c.post("/api/images/uploads", json={"name": "bench", "size_bytes": total})
        up.raise_for_status()
        upload_id = up.json()["id"]
        args = [sys.executable, "-c", CLIENT, self.base, self.token, upload_id, str(tarball),
                str(total)] + ([str(self.chunk)] if self.chunk else [])
        out = subprocess.run(args, cwd=self.tree, env=self.env, capture_output=True, text=True)
        line = [x for x in out.stderr.splitlines() if x.startswith("SECONDS")]
        if out.returncode or not line:
            raise SystemExit(f"{self.label} client failed:\n{out.stderr[-3000:]}")
        upload_s, chunk, client_cpu = (float(x) for x in line[-1].split()[1:4])
        server_cpu = cpu_s(self.server.pid) - cpu  # receiving only: validation comes next
        t = time.perf_counter()
        done = c.post(f"/api/images/uploads/{upload_id}/complete")
        done.raise_for_status()
        validate_s = time.perf_counter() - t
        monitor.running = False
        monitor.join()
        image = done.json()
        if image["status"] != "valid":
            raise SystemExit(f"{self.label}: image {image['status']}: {image}")
        # Deleted, so the next round's identical bytes are validated again (not a duplicate).
        c.delete(f"/api/images/{image['id']}").raise_for_status()
        self.results.append({"mbps": total / 1e6 / upload_s, "upload_s": upload_s,
                             "validate_mbps": total / 1e6 / validate_s,
                             "growth_mb": monitor.peak - baseline, "peak_mb": monitor.peak,
                             "chunk_mib": chunk / (1 << 20),
                             "server_cpu": server_cpu / (total / 1e9),
                             "client_cpu": client_cpu / (total / 1e9)})
        r = self.results[-1]
        return (f"  {self.label:>9}: upload {r['mbps']:7.1f} MB/s ({upload_s:.1f} s, "
                f"{r['chunk_mib']:.0f} MiB chunks; CPU s/GB: server {r['server_cpu']:.2f}, "
                f"client {r['client_cpu']:.2f}), validation "
                f"{r['validate_mbps']:7.1f} MB/s, server RSS peak {r['peak_mb']:.0f} MB "
                f"(+{r['growth_mb']:.0f} MB)")

    def close(self) -> None:
        self.client.close()
        self.server.terminate()
        self.server.wait(timeout=30)


def checkout(rev: str, dest: Path) -> Path:
    """The project's files at ``rev`` (``git archive``; nothing of the work tree changes)."""
    dest.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="uploads per side, alternating (medians are reported)")
    parser.add_argument("--reference", default=REFERENCE_REV,
                        help="git revision of the reference side, or 'none' "
                             "(default: the code before the upload rework)")
    parser.add_argument("--chunk-mb", type=int, default=None,
                        help="chunk size for the current side (default: its CLI's)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syntharena-bench-", dir=args.workdir))
    sides: list[Side] = []
    try:
        tarball = work / "image.tar"
        t0 = time.perf_counter()
        write_tarball(tarball, int(args.size_gb * 1e9))
        total = tarball.stat().st_size
        print(f"tarball: {total / 1e9:.2f} GB written in {time.perf_counter() - t0:.1f} s")
        if args.reference != "none":
            ref = checkout(args.reference, work / "reference")
            sides.append(Side("reference", ref, work, None))
        sides.append(Side("current", ROOT, work,
                          args.chunk_mb << 20 if args.chunk_mb else None))
        for n in range(args.rounds):
            print(f"round {n + 1}:")
            for side in sides if n % 2 == 0 else sides[::-1]:
                print(side.upload(tarball), flush=True)
        print(f"medians over {args.rounds} rounds, {total / 1e9:.2f} GB, loopback:")
        for side in sides:
            mbps = median([r["mbps"] for r in side.results])
            growth = max(r["growth_mb"] for r in side.results)
            cpu = median([r["server_cpu"] + r["client_cpu"] for r in side.results])
            print(f"upload {side.label}: {mbps:.1f} MB/s "
                  f"({side.results[0]['chunk_mib']:.0f} MiB chunks; {cpu:.2f} CPU s/GB server "
                  "and client); validation "
                  f"{median([r['validate_mbps'] for r in side.results]):.1f} MB/s; server RSS "
                  f"growth max {growth:.0f} MB (goal < {GOAL_MB} MB: "
                  f"{'OK' if growth < GOAL_MB else 'OVER'})")
        if len(sides) == 2:
            pairs = zip(sides[0].results, sides[1].results, strict=True)
            ratios = [c["mbps"] / r["mbps"] for r, c in pairs]
            print(f"upload current/reference: median {median(ratios):.2f}x "
                  f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    finally:
        for side in sides:
            side.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
