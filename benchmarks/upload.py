"""Upload a multi-GB `docker save` tarball over loopback to a uvicorn this script starts.

Reports upload throughput, validation time and the server's peak memory growth (resident
set size over its idle baseline). Goal (issue #3): growth under 100 MB whatever the size.

    .venv/bin/python benchmarks/upload.py --size-gb 4
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


class PeakRSS(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)


def prepare(data_dir: Path) -> tuple[dict[str, str], str]:
    """Migrate an SQLite database (the embedded default) and create a user with a token."""
    db_url = f"sqlite:///{data_dir / 'bench.db'}"
    env = {**os.environ, "SYNTHARENA_DATA_DIR": str(data_dir),
           "SYNTHARENA_DATABASE_URL": db_url, "SYNTHARENA_DEV_MODE": "1"}  # a scratch server
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
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
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    return env, out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-gb", type=float, default=3.0)
    parser.add_argument("--chunk-mb", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="syntharena-bench-", dir=args.workdir))
    try:
        run(work, int(args.size_gb * 1e9), args.chunk_mb << 20)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size: int, chunk: int) -> None:
    tarball = work / "image.tar"
    t0 = time.perf_counter()
    write_tarball(tarball, size)
    total = tarball.stat().st_size
    print(f"tarball: {total / 1e9:.2f} GB written in {time.perf_counter() - t0:.1f} s")
    data_dir = work / "data"
    data_dir.mkdir()
    env, token = prepare(data_dir)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=3600) as c:
            for _ in range(200):
                try:
                    if c.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            c.get("/api/auth/me").raise_for_status()
            baseline = rss_mb(server.pid)
            monitor = PeakRSS(server.pid)
            monitor.start()
            up = c.post("/api/images/uploads", json={"name": "bench", "size_bytes": total})
            up.raise_for_status()
            upload_id = up.json()["id"]
            t1 = time.perf_counter()
            with tarball.open("rb") as f:
                offset = 0
                while offset < total:
                    n = min(chunk, total - offset)

                    def body(n: int = n) -> Iterator[bytes]:
                        left = n
                        while left:
                            data = f.read(min(BLOCK, left))
                            left -= len(data)
                            yield data

                    r = c.put(f"/api/images/uploads/{upload_id}", content=body(),
                              headers={"Content-Range": f"bytes {offset}-{offset + n - 1}/{total}",
                                       "Content-Length": str(n)})
                    r.raise_for_status()
                    offset = r.json()["received_bytes"]
            upload_s = time.perf_counter() - t1
            t2 = time.perf_counter()
            done = c.post(f"/api/images/uploads/{upload_id}/complete")
            done.raise_for_status()
            validate_s = time.perf_counter() - t2
            monitor.running = False
            monitor.join()
        image = done.json()
        growth = monitor.peak - baseline
        print(f"image: #{image['id']} {image['status']} ({image['validation_message']})")
        print(f"upload:     {total / 1e6 / upload_s:8.1f} MB/s  ({upload_s:.1f} s, "
              f"{chunk >> 20} MiB chunks, loopback)")
        print(f"validation: {total / 1e6 / validate_s:8.1f} MB/s  ({validate_s:.1f} s, "
              "one streaming pass)")
        print(f"server RSS: baseline {baseline:.0f} MB, peak {monitor.peak:.0f} MB, "
              f"growth {growth:.0f} MB  (goal: < {GOAL_MB} MB) -> "
              f"{'OK' if growth < GOAL_MB else 'OVER GOAL'}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
