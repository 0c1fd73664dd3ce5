"""Leaderboard reads at challenge scale over loopback (issue #20).

Seeds its own database through the project's models (one phase ranked by mean rank over six
columns; U users with N succeeded submissions between them, each with an aggregate and
per-case results), starts the API as deployed (uvicorn, one worker by default as in
docker-compose), and drives it from an asyncio client with C connections and a bounded
number of requests per endpoint. Ends with one line per endpoint:

    <endpoint>: p50 X ms, p99 Y ms, Z req/s at N submissions, C connections

The client shares the machine with the API: ``--client httpx`` (httpx's AsyncClient) spends
~1 CPU ms per request in the client, which on a 2-core machine is CPU the API does not get;
``--client raw`` (the default) speaks HTTP/1.1 keep-alive over asyncio streams directly
(GET only, Content-Length and chunked bodies) at a fraction of that cost. Both print the
client's CPU seconds, so the share it took is visible; ``--client both`` runs both in turn.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/leaderboard.py --submissions 10000 \\
        --users 2000 --connections 32 --database-url postgresql+psycopg://…/postgres

A PostgreSQL URL names a server: the script creates a scratch database next to the named one
and drops it afterwards. Without a URL it uses a SQLite file in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from statistics import quantiles

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENDPOINT_KEYS = ["json", "html", "page", "page-first", "status", "health"]
COLUMNS = [("mae", False), ("psnr", True), ("ssim", True), ("ms_ssim", True),
           ("dice", True), ("hd95", False)]


@contextmanager
def scratch_database(url: str | None) -> Iterator[str]:
    from sqlalchemy import create_engine, make_url, text

    if url is None or url.startswith("sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            yield url or f"sqlite:///{tmp}/bench.db"
        return
    u = make_url(url)
    name = f"syntharena_bench_{os.getpid()}"
    admin = create_engine(u, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield u.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrate(url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.set_main_option("script_location", str(ROOT / "migrations"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()


@dataclass(frozen=True)
class Seeded:
    probe: int  # a submission in mid-table
    token: str  # its owner's API token
    org_token: str  # an organiser's, who may open every submission
    submission_ids: list[int]
    note: str


def seed(url: str, submissions: int, users: int, cases: int) -> Seeded:
    from sqlalchemy import create_engine, insert
    from sqlalchemy.orm import Session

    from backend.auth.service import create_token
    from backend.models import ChallengeMember, ChallengeRole, User, utcnow
    from backend.models.challenges import Challenge, Phase, PhaseKind, RankingMethod
    from backend.models.datasets import Case, Dataset, DatasetVersion, Modality
    from backend.models.images import AlgorithmImage, ImageStatus
    from backend.models.submissions import (
        AggregateResult,
        CaseRun,
        CaseRunStatus,
        Result,
        Submission,
        SubmissionStatus,
    )

    rng = random.Random(0)
    engine = create_engine(url)
    t0 = time.perf_counter()
    with Session(engine) as s:
        org = User(email="org@bench.test", username="org", password_hash="x")
        s.add(org)
        s.flush()
        ch = Challenge(slug="bench", title="Bench", created_by_id=org.id)
        ds = Dataset(slug="bench-data", title="Bench data")
        s.add_all([ch, ds])
        s.flush()
        dv = DatasetVersion(dataset_id=ds.id, version=1, source="bench", case_count=cases)
        s.add(dv)
        s.flush()
        case_ids = []
        for i in range(cases):
            c = Case(dataset_version_id=dv.id, name=f"1BA{i:03d}", modality=Modality.MRI,
                     region="Brain", input_image_path=f"in/{i}.mha", mask_path=f"in/{i}m.mha",
                     ground_truth_path=f"gt/{i}.mha", labels_path=None, plan_path=None)
            s.add(c)
            s.flush()
            case_ids.append(c.id)
        phase = Phase(challenge_id=ch.id, slug="val", title="Validation",
                      kind=PhaseKind.VALIDATION, dataset_version_id=dv.id, is_open=True,
                      ranking_method=RankingMethod.MEAN_RANK, primary_metric="mae",
                      primary_higher_is_better=False,
                      extra_columns=[{"metric": m, "higher_is_better": h}
                                     for m, h in COLUMNS[1:]])
        s.add(phase)
        s.flush()
        s.execute(insert(User), [{"email": f"u{i}@bench.test", "username": f"team{i:05d}",
                                  "password_hash": "x"} for i in range(users)])
        user_ids = list(s.scalars(User.__table__.select().with_only_columns(User.id)
                                  .where(User.username.like("team%")).order_by(User.id)))
        s.execute(insert(AlgorithmImage), [
            {"owner_id": u, "name": "algo", "sha256": uuid.uuid4().hex * 2, "size_bytes": 1,
             "status": ImageStatus.VALID, "validation_message": "", "storage_key": f"k/{u}"}
            for u in user_ids])
        image_of = dict(s.execute(AlgorithmImage.__table__.select().with_only_columns(
            AlgorithmImage.owner_id, AlgorithmImage.id)).all())
        start = utcnow() - timedelta(days=30)
        owners = [user_ids[i % users] for i in range(submissions)]
        s.execute(insert(Submission), [
            {"phase_id": phase.id, "user_id": u, "image_id": image_of[u],
             "status": SubmissionStatus.SUCCEEDED, "cases_total": cases, "cases_done": cases,
             "current_step": "done", "created_at": start + timedelta(seconds=37 * i),
             "finished_at": start + timedelta(seconds=37 * i + 30)}
            for i, u in enumerate(owners)])
        sub_ids = list(s.scalars(Submission.__table__.select().with_only_columns(
            Submission.id).order_by(Submission.id)))
        aggs, results = [], []
        for sid in sub_ids:
            skill = rng.random()
            per_case = [{m: (40 + 60 * skill + rng.gauss(0, 5)) if not h else
                         (0.5 + 0.4 * (1 - skill) + rng.gauss(0, 0.03)) for m, h in COLUMNS}
                        for _ in case_ids]
            means = {m: sum(p[m] for p in per_case) / cases for m, _ in COLUMNS}
            aggs.append({"submission_id": sid, "metrics": means, "cases_scored": cases,
                         "statistics": {"per_metric": {m: {"mean": means[m], "std": 1.0,
                                                           "n": cases} for m, _ in COLUMNS}}})
            results += [{"submission_id": sid, "case_id": c, "metrics": p}
                        for c, p in zip(case_ids, per_case, strict=True)]
        s.execute(insert(AggregateResult), aggs)
        for i in range(0, len(results), 20000):
            s.execute(insert(Result), results[i:i + 20000])
            s.execute(insert(CaseRun), [  # the per-case table and the logs of the page
                {"submission_id": r["submission_id"], "case_id": r["case_id"],
                 "status": CaseRunStatus.SUCCEEDED, "attempts": 1, "exit_code": 0,
                 "duration_s": 41.5, "stdout": "predicting 1 case\ndone\n", "stderr": ""}
                for r in results[i:i + 20000]])
        s.add(ChallengeMember(challenge_id=ch.id, user_id=org.id,
                              role=ChallengeRole.ORGANIZER))
        probe = sub_ids[len(sub_ids) // 2]
        owner = s.get(User, owners[len(sub_ids) // 2])
        assert owner is not None
        _, token = create_token(s, owner, "bench", None)
        _, org_token = create_token(s, org, "bench", None)
        s.commit()
    engine.dispose()
    return Seeded(probe, token, org_token, sub_ids,
                  f"seeded in {time.perf_counter() - t0:.1f} s")


def recompute_time(url: str) -> str:
    """What a change costs the worker: the ranks (a reader's read-through does the same),
    then the bootstrap rank ranges; stored, so reads find a complete document."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from backend.config import settings
    from backend.leaderboards import service
    from backend.models import Phase

    if not hasattr(service, "refresh"):
        return "recompute: n/a (ranked on every read)"
    settings.database_url = url
    engine = create_engine(url)
    with Session(engine) as s:
        phase_id = s.scalars(select(Phase.id)).one()
        t0 = time.perf_counter()
        service.refresh(s, phase_id)
        s.commit()
        ranks = time.perf_counter() - t0
    engine.dispose()
    t0 = time.perf_counter()
    service.recompute(phase_id)
    return f"recompute: ranks {ranks:.2f} s, rank ranges {time.perf_counter() - t0:.2f} s"


class RawConnection:
    """One HTTP/1.1 keep-alive connection that sends GETs and reads whole answers (the
    lean client: no pools, no header objects, no decoding)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {host}:{port}\r\n{extra}\r\n".encode()
        self._io: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, int]:
        """(status, body bytes) of ``GET path``; reconnects when the server closed or the
        previous request failed."""
        try:
            return await self._get(path)
        except BaseException:
            self.close()
            raise

    async def _get(self, path: str) -> tuple[int, int]:
        if self._io is None:
            self._io = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._io
        writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self._head)
        status = int((await reader.readline()).split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        size = 0
        if chunked:
            while (n := int((await reader.readline()).split(b";")[0], 16)) > 0:
                size += len(await reader.readexactly(n + 2)) - 2
            while await reader.readline() not in (b"\r\n", b""):
                pass
        else:
            size = len(await reader.readexactly(length))
        if close:
            writer.close()
            self._io = None
        return status, size

    def close(self) -> None:
        if self._io is not None:
            self._io[1].close()
            self._io = None


Get = Callable[[int], Awaitable[tuple[int, int]]]  # get(connection) -> (status, body bytes)
Target = str | Callable[[], str]  # one path, or a function giving each request's path


async def _measure(get: Get, path: Target, requests: int, connections: int,
                   transport_errors: tuple[type[BaseException], ...]
                   ) -> tuple[list[float], float, int, float, int]:
    """``requests`` GETs over ``connections`` at once; (latencies, wall, errors, first read's
    time, answer size). Warms every API process first (templates, caches, the parsed
    document): one request per connection at once, so each worker process gets some; the
    first read's cost is reported on its own line."""
    t_first = time.perf_counter()
    _status, size = await get(0)
    first = time.perf_counter() - t_first
    await asyncio.gather(*(get(i) for i in range(connections)))
    latencies: list[float] = []
    errors = 0
    left = requests

    async def one(i: int) -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            try:
                status, _n = await get(i)
                errors += status != 200
            except transport_errors as exc:  # counted and named, the run goes on
                errors += 1
                print(f"  {path}: {type(exc).__name__} {exc}", file=sys.stderr)
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(connections)))
    return latencies, time.perf_counter() - t0, errors, first, size


def _at(path: Target) -> str:
    return path if isinstance(path, str) else path()


async def drive_raw(base: str, path: Target, headers: dict[str, str], requests: int,
                    connections: int) -> tuple[list[float], float, int, float, int]:
    """:func:`_measure` with one :class:`RawConnection` per connection."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conns = [RawConnection(host, int(port), headers) for _ in range(connections)]
    try:
        return await _measure(lambda i: conns[i].get(_at(path)), path, requests, connections,
                              (OSError, ValueError, IndexError, asyncio.IncompleteReadError))
    finally:
        for c in conns:
            c.close()


async def drive(base: str, path: Target, headers: dict[str, str], requests: int,
                connections: int) -> tuple[list[float], float, int, float, int]:
    """:func:`_measure` with httpx's AsyncClient (a pool of ``connections``)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                 timeout=120) as client:

        async def get(_connection: int) -> tuple[int, int]:
            r = await client.get(_at(path))
            return r.status_code, len(r.content)

        return await _measure(get, path, requests, connections, (httpx.TransportError,))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--users", type=int, default=0, help="default: submissions / 5")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--requests", type=int, default=1000, help="per endpoint")
    ap.add_argument("--cases", type=int, default=5, help="scored cases per submission")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--client", choices=["raw", "httpx", "both"], default="raw",
                    help="load client (see above); both: each endpoint with each in turn")
    ap.add_argument("--endpoints", default=",".join(ENDPOINT_KEYS),
                    help=f"which to drive, comma-separated ({', '.join(ENDPOINT_KEYS)})")
    args = ap.parse_args()
    users = args.users or max(1, args.submissions // 5)
    with scratch_database(args.database_url) as url, tempfile.TemporaryDirectory() as data:
        migrate(url)
        seeded = seed(url, args.submissions, users, args.cases)
        probe, token = seeded.probe, seeded.token
        print(f"{seeded.note}; {users} users; {recompute_time(url)}", flush=True)
        # the organiser's first view of each submission, in random order (wraps around)
        order = random.Random(1).sample(seeded.submission_ids, len(seeded.submission_ids))
        first_views = (f"/submissions/{order[i % len(order)]}" for i in range(1 << 62))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SYNTHARENA_DATABASE_URL": url,
               "SYNTHARENA_DATA_DIR": data}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(args.workers), "--log-level", "warning",
             "--timeout-worker-healthcheck", "60"], cwd=ROOT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(base + "/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            auth = {"Authorization": f"Bearer {token}"}
            html = {"accept": "text/html"}
            org = {**html, "Authorization": f"Bearer {seeded.org_token}"}
            every: list[tuple[str, Target, dict[str, str]]] = [
                ("JSON leaderboard", "/api/challenges/bench/phases/val/leaderboard", {}),
                ("HTML leaderboard", "/challenges/bench/val/leaderboard", html),
                ("submission page", f"/submissions/{probe}", {**html, **auth}),
                ("submission page, first view", lambda: next(first_views), org),
                ("submission status", f"/api/submissions/{probe}", auth),
                # The floor on this machine: no database, one thread-pool hop, same client.
                ("health (reference)", "/api/health", {}),
            ]
            chosen = args.endpoints.split(",")
            endpoints = [e for key, e in zip(ENDPOINT_KEYS, every, strict=True) if key in chosen]
            clients = ["raw", "httpx"] if args.client == "both" else [args.client]
            for name, path, headers in endpoints:
                for client in clients:
                    drive_fn = drive_raw if client == "raw" else drive
                    cpu0 = time.process_time()
                    lat, wall, errors, first, size = asyncio.run(
                        drive_fn(base, path, headers, args.requests, args.connections))
                    cpu = time.process_time() - cpu0
                    q = quantiles(lat, n=100, method="inclusive")
                    note = f" ({errors} errors)" if errors else ""
                    print(f"{name}: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
                          f"{len(lat) / wall:.0f} req/s at {args.submissions} submissions, "
                          f"{args.connections} connections{note} (first read "
                          f"{first * 1000:.0f} ms, {size / 1000:.0f} kB; {client} client "
                          f"{cpu * 1000 / max(1, len(lat)):.2f} CPU ms per request)",
                          flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
