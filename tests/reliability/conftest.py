"""Fixtures of the reliability suite: hostile images (examples/hostile/build.sh, cached by tag),
and a private pipeline (its own PostgreSQL database, Redis database and data dir) whose worker
runs with small sandbox caps so hostile runs end in seconds."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.worker import harness
from worker import sandbox

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_BUILD = ROOT / "examples" / "hostile" / "build.sh"
HOSTILE_OUT = ROOT / "build" / "hostile"
HOSTILE_MODES = ["fork-bomb", "memory-bomb", "cpu-spin", "sleep-forever", "network",
                 "write-input", "fill-disk", "many-files", "log-flood", "symlink-file",
                 "symlink-dir", "mha-external", "setuid", "secrets", "docker-socket"]
# Worker settings for hostile runs (small caps: every attack ends within seconds).
SANDBOX_ENV = {
    "SYNTHARENA_SANDBOX_OUTPUT_MB": "64",
    "SYNTHARENA_SANDBOX_OUTPUT_FILES": "200",
    "SYNTHARENA_SANDBOX_PIDS_LIMIT": "64",
    "SYNTHARENA_SANDBOX_TMP_MB": "16",
    "SYNTHARENA_LOG_CAPTURE_BYTES": "16384",
    # Secrets the worker holds: no container may ever see them.
    "SYNTHARENA_SECRET_KEY": "reliability-secret-key-7f3a9c",
    "SYNTHARENA_S3_SECRET_ACCESS_KEY": "reliability-s3-secret-2b8e1d",
}


@dataclass(frozen=True)
class ReliabilityEnv(harness.PipelineEnv):
    def env(self) -> dict[str, str]:
        return {**super().env(), **SANDBOX_ENV}


def hostile_tag(mode: str) -> str:
    return f"syntharena-hostile/{mode}:latest"


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if not sandbox.ping():
        pytest.fail("No Docker engine: run `source scripts/services.sh; start_docker`.")


@pytest.fixture(scope="session")
def hostile_images(docker_engine: None) -> dict[str, Path]:
    subprocess.run(["bash", str(HOSTILE_BUILD)], check=True, cwd=ROOT, capture_output=True)
    return {m: HOSTILE_OUT / f"{m}.tar.gz" for m in HOSTILE_MODES}


@pytest.fixture(scope="session")
def example_images(docker_engine: None) -> dict[str, str]:
    from tests.worker.helpers import ensure_example

    return {n: ensure_example(n) for n in ("static-c",)}


@pytest.fixture(scope="module")
def reliability_env(tmp_path_factory: pytest.TempPathFactory, hostile_images: dict[str, Path],
                    example_images: dict[str, str]) -> Iterator[ReliabilityEnv]:
    with harness.settings_restored():
        base = harness.setup("syntharena_reliability", tmp_path_factory.mktemp("data"),
                             redis_db=12)
        yield ReliabilityEnv(base.database_url, base.redis_url, base.data_dir)


@pytest.fixture
def clean_env(reliability_env: ReliabilityEnv) -> Iterator[ReliabilityEnv]:
    harness.configure(reliability_env)
    harness.truncate_all()
    harness.flush_redis(reliability_env)
    yield reliability_env


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory, example_images: dict[str, str]):
    """PostgreSQL and Redis of this module's own (restartable), migrated; settings point at
    them for the module and are restored after."""
    import psycopg

    from tests.reliability.stack import PrivatePostgres, PrivateRedis

    with harness.settings_restored():
        root = tmp_path_factory.mktemp("stack")
        pg = PrivatePostgres()
        redis = PrivateRedis(root / "redis")
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres",
                             autocommit=True) as conn:
            conn.execute('CREATE DATABASE "syntharena"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/syntharena"
        harness.migrate(url)
        env = ReliabilityEnv(url, redis.url, root / "data")
        env.data_dir.mkdir()
        harness.configure(env)
        yield env, pg, redis
        redis.stop()
        pg.destroy()
