"""A real pipeline for tests and benchmarks: its own PostgreSQL database (built by Alembic),
its own Redis database, a data dir, seeded phases and Celery worker subprocesses.

Worker processes cannot see a test's open transaction, so these tests use a dedicated database
that is migrated once and emptied between tests instead of rolled back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg
import SimpleITK as sitk  # noqa: N813
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from backend import db, tasks_client
from backend.config import settings
from backend.models import (
    AlgorithmImage,
    Case,
    Challenge,
    Dataset,
    DatasetVersion,
    ImageStatus,
    Modality,
    Phase,
    PhaseKind,
    Submission,
    SubmissionStatus,
    User,
)
from backend.submissions import pipeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_OUT = ROOT / "build" / "examples"
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class PipelineEnv:
    database_url: str
    redis_url: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SYNTHARENA_DATABASE_URL": self.database_url,
            "SYNTHARENA_REDIS_URL": self.redis_url,
            "SYNTHARENA_DATA_DIR": str(self.data_dir),
            "SYNTHARENA_REAPER_GRACE_S": "5",
        }


def create_database(name: str) -> str:
    """Drop and create ``name`` on the test server; return its SQLAlchemy URL."""
    base = os.environ.get("SYNTHARENA_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
    url = make_url(base)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"],
        cwd=ROOT, check=True, capture_output=True,
    )


def configure(env: PipelineEnv) -> None:
    """Point this process (settings, engine, Celery clients) at ``env``."""
    settings.database_url = env.database_url
    settings.redis_url = env.redis_url
    settings.data_dir = env.data_dir
    settings.reaper_grace_s = 5
    db.get_engine.cache_clear()
    db.get_sessionmaker.cache_clear()
    from backend import storage

    storage.get_storage.cache_clear()
    tasks_client.configure(env.redis_url)
    from worker.celery_app import app

    repoint_broker(app, env.redis_url)


@contextmanager
def settings_restored() -> Iterator[None]:
    """Put the app's settings, cached engine/storage and broker back as they were afterwards
    (pipeline environments repoint them at dedicated databases)."""
    from backend import storage
    from worker.celery_app import app

    saved = (settings.database_url, settings.redis_url, settings.data_dir,
             settings.reaper_grace_s, app.conf.broker_url)
    try:
        yield
    finally:
        (settings.database_url, settings.redis_url, settings.data_dir,
         settings.reaper_grace_s, _) = saved
        repoint_broker(app, saved[4])
        db.get_engine.cache_clear()
        db.get_sessionmaker.cache_clear()
        storage.get_storage.cache_clear()
        tasks_client.configure(saved[1])


def redis_url_for_db(redis_db: int) -> str:
    """Database ``redis_db`` on the Redis server of ``SYNTHARENA_REDIS_URL`` (its host and
    port; the default 127.0.0.1:6379), so parallel test runs can each use their own server."""
    base = urlsplit(os.environ.get("SYNTHARENA_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return f"redis://{base.netloc}/{redis_db}"


def repoint_broker(app: Any, url: str) -> None:
    """Point this process's Celery app (control messages: ping, inspect) at ``url``. Closing the
    app drops its connection pool, but not the producer pool built on it: left alone, control
    messages would still go to the previous broker (e.g. a private Redis a reliability test
    has stopped) and no worker would ever answer."""
    app.conf.update(broker_url=url)
    app.close()
    app.amqp._producer_pool = None


def setup(name: str, data_dir: Path, redis_db: int) -> PipelineEnv:
    env = PipelineEnv(
        database_url=create_database(name),
        redis_url=redis_url_for_db(redis_db),
        data_dir=data_dir,
    )
    migrate(env.database_url)
    configure(env)
    flush_redis(env)
    return env


def flush_redis(env: PipelineEnv) -> None:
    import redis

    redis.Redis.from_url(env.redis_url).flushdb()


def truncate_all() -> None:
    with db.session_scope() as s:
        tables = s.scalars(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'")).all()
        s.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


# ------------------------------------------------------------------ data


def write_phantom_case(data_dir: Path, dataset: str, name: str,
                       shape: tuple[int, int, int] = (48, 64, 64), seed: int = 0) -> dict[str, str]:
    """MR + body mask (inputs/) and CT (groundtruth/), paths relative to data_dir."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    c = [s / 2 for s in shape]
    r = ((z - c[0]) / (0.45 * shape[0])) ** 2 + ((y - c[1]) / (0.4 * shape[1])) ** 2 \
        + ((x - c[2]) / (0.4 * shape[2])) ** 2
    mask = (r < 1).astype(np.uint8)
    bone = (r > 0.7) & (r < 1)
    mr = mask * (400.0 - 250.0 * bone) + rng.normal(0, 8, shape)
    ct = np.where(mask > 0, np.where(bone, 700.0, 40.0), -1000.0) + rng.normal(0, 5, shape)
    ref: Any = sitk.GetImageFromArray(mr.clip(0).astype(np.int16))
    ref.SetSpacing((1.0, 1.0, 2.5))
    ref.SetOrigin((-32.0, -32.0, -60.0))
    out: dict[str, str] = {}
    for key, arr, root in (("input_image_path", mr.clip(0).astype(np.int16), "inputs"),
                           ("mask_path", mask, "inputs"),
                           ("ground_truth_path", ct.astype(np.int16), "groundtruth")):
        img: Any = sitk.GetImageFromArray(arr)
        img.CopyInformation(ref)
        rel = Path(root) / dataset / name / f"{key.split('_')[0]}.mha"
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(img, str(data_dir / rel), useCompression=True)
        out[key] = str(rel)
    return out


def seed_phase(s: Session, data_dir: Path, *, slug: str, n_cases: int = 3,
               shape: tuple[int, int, int] = (48, 64, 64), **phase: Any) -> Phase:
    challenge = s.scalar(select(Challenge).where(Challenge.slug == "test-challenge"))
    if challenge is None:
        challenge = Challenge(slug="test-challenge", title="Test challenge")
        s.add(challenge)
        s.flush()
    ds = Dataset(slug=f"ds-{slug}", title=slug, challenge_id=challenge.id)
    s.add(ds)
    s.flush()
    version = DatasetVersion(dataset_id=ds.id, version=1, source="phantoms", case_count=n_cases)
    s.add(version)
    s.flush()
    for i in range(n_cases):
        name = f"1BA{i:03d}"
        paths = write_phantom_case(data_dir, ds.slug, name, shape, seed=i)
        s.add(Case(dataset_version_id=version.id, name=name, modality=Modality.MRI,
                   region="brain", labels_path=None, plan_path=None, **paths))
    p = Phase(challenge_id=challenge.id, slug=slug, title=slug, kind=PhaseKind.TEST,
              dataset_version_id=version.id, is_open=True, **phase)
    s.add(p)
    s.flush()
    return p


def user(s: Session, name: str) -> User:
    u = s.scalar(select(User).where(User.username == name))
    if u is None:
        u = User(email=f"{name}@example.org", username=name, password_hash="x")
        s.add(u)
        s.flush()
    return u


def register_image(s: Session, owner: User, example: str) -> AlgorithmImage:
    """An uploaded-and-validated image row whose tarball is the example's build output."""
    return register_tarball(s, owner, example, EXAMPLES_OUT / f"{example}.tar.gz")


def register_tarball(s: Session, owner: User, name: str, tarball: Path) -> AlgorithmImage:
    """An uploaded-and-validated image row for ``tarball`` (linked into image storage)."""
    key = f"{owner.id}/{name}.tar.gz"
    dest = settings.images_dir / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        try:
            os.link(tarball, dest)
        except OSError:
            shutil.copyfile(tarball, dest)
    digest = hashlib.sha256(f"{name}-{owner.id}".encode()).hexdigest()
    image = AlgorithmImage(owner_id=owner.id, name=name, sha256=digest,
                           size_bytes=tarball.stat().st_size, status=ImageStatus.VALID,
                           storage_key=key, docker_image_id=None, compression="gzip")
    s.add(image)
    s.flush()
    return image


def submit(s: Session, phase: Phase, username: str, example: str) -> Submission:
    u = user(s, username)
    sub = Submission(phase_id=phase.id, user_id=u.id, image_id=register_image(s, u, example).id,
                     status=SubmissionStatus.PENDING)
    s.add(sub)
    s.flush()
    pipeline.enqueue_start(s, sub.id)
    return sub


# ------------------------------------------------------------------ worker processes


def start_worker(penv: PipelineEnv, name: str, *, concurrency: int = 2,
                 queues: Iterable[str] = ("images", "gpu", "eval"),
                 log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``env``: the process's environment instead of ``penv.env()`` (another host)."""
    log = open(log_path or penv.data_dir / f"worker-{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
         "-Q", ",".join(queues), "-c", str(concurrency), "-n", f"{name}@%h",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env or penv.env(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: tests kill the whole worker
    )
    return proc


def wait_ready(name: str, timeout_s: float = 60) -> None:
    """Until the worker node answers control messages (it then consumes its queues too)."""
    from worker.celery_app import app

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if any(name in r for reply in replies for r in reply):
            return
    raise TimeoutError(f"worker {name} did not start")


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_done(submission_ids: Iterable[int], timeout_s: float = 120) -> dict[int, Submission]:
    ids = list(submission_ids)
    deadline = time.monotonic() + timeout_s
    while True:
        with db.session_scope() as s:
            subs = {x.id: x for x in s.scalars(select(Submission).where(Submission.id.in_(ids)))}
        if all(x.status in (SubmissionStatus.SUCCEEDED, SubmissionStatus.FAILED,
                            SubmissionStatus.CANCELLED) for x in subs.values()):
            return subs
        if time.monotonic() > deadline:
            raise TimeoutError({k: (v.status.value, v.current_step) for k, v in subs.items()})
        time.sleep(0.2)
