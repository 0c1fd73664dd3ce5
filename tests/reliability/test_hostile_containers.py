"""Hostile algorithm containers through the real pipeline (Celery worker, Redis, PostgreSQL,
Docker): each attack ends as a failed case with a clear reason, leaves evidence that it was
contained, and the platform stays healthy: a normal submission afterwards succeeds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from backend.db import session_scope
from backend.models import CaseRunStatus, SubmissionStatus
from tests.reliability import figures
from tests.reliability.conftest import SANDBOX_ENV, ReliabilityEnv
from tests.reliability.helpers import hostile_worker, judge_container, runs, submit_tarball
from tests.worker import harness
from tests.worker.helpers import EXAMPLES_OUT
from worker import sandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]

F, T = CaseRunStatus.FAILED, CaseRunStatus.TIMED_OUT
LIMIT_S = 5
# mode: (expected case status, words the participant's error message must contain,
#        evidence in the captured logs that the attack ran and was contained)
EXPECT: dict[str, tuple[CaseRunStatus, str, str]] = {
    "fork-bomb": (T, f"time limit of {LIMIT_S} s", "refused (Resource temporarily unavailable)"),
    "memory-bomb": (F, "exceeded the memory limit of 128 MB", "allocated"),
    "cpu-spin": (T, f"time limit of {LIMIT_S} s", ""),
    "sleep-forever": (T, f"time limit of {LIMIT_S} s", ""),
    "network": (F, "exited with code 42", "contained tcp connect 172.17.0.1:6379"),
    "write-input": (F, "exited with code 42", "contained truncate the input image"),
    "fill-disk": (F, "wrote more than 64 MB to /output", ""),
    "many-files": (F, "more than 200 files and folders", ""),
    "log-flood": (T, f"time limit of {LIMIT_S} s", "LLLL"),
    "symlink-file": (F, "No synthetic CT was written", "symlink"),
    "symlink-dir": (F, "No synthetic CT was written", "symlink"),
    "mha-external": (F, "keeps its voxels in another file", "header pointing"),
    "setuid": (F, "exited with code 42", "contained setuid exec gave euid 1000"),
    "secrets": (F, "exited with code 42", "ENV HOSTILE_MODE=secrets"),
    "docker-socket": (F, "exited with code 42", "contained connect /var/run/docker.sock"),
}
ALLOWED_ENV = {"PATH", "HOSTNAME", "HOME", "HOSTILE_MODE", "HOSTILE_TARGETS",
               "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_MIG_CONFIG_DEVICES",
               "NVIDIA_MIG_MONITOR_DEVICES"}


@pytest.fixture(scope="module")
def worker(reliability_env: ReliabilityEnv):
    with hostile_worker(reliability_env, "reliability") as proc:
        yield proc


def _secret_values(env: ReliabilityEnv) -> list[str]:
    values = [SANDBOX_ENV["SYNTHARENA_SECRET_KEY"], SANDBOX_ENV["SYNTHARENA_S3_SECRET_ACCESS_KEY"],
              env.database_url, env.redis_url]
    return [v for v in values if v]


def test_hostile_containers_are_contained(clean_env: ReliabilityEnv, worker: Any,
                                          hostile_images: dict[str, Path]) -> None:
    env = clean_env
    ids: dict[str, int] = {}
    with session_scope() as s:
        for mode in EXPECT:
            phase = harness.seed_phase(s, env.data_dir, slug=mode, n_cases=1,
                                       case_time_limit_s=LIMIT_S, memory_mb=128, cpus=1.0)
            ids[mode] = submit_tarball(s, phase, f"mallory-{mode}", mode, hostile_images[mode])
    subs = harness.wait_done(ids.values(), timeout_s=420)
    secrets = _secret_values(env)
    problems: list[str] = []
    for mode, (status, message, evidence) in EXPECT.items():
        sub = subs[ids[mode]]
        (run,) = runs(sub.id)
        logs = run.stdout + "\n" + run.stderr
        why: list[str] = []
        if sub.status is not SubmissionStatus.FAILED:
            why.append(f"submission {sub.status.value}")
        if run.status is not status:
            why.append(f"case {run.status.value}, expected {status.value}")
        if message not in run.error_message:
            why.append(f"message {run.error_message!r} lacks {message!r}")
        leaked = [v for v in secrets if v in logs]
        if leaked:
            why.append(f"secret values in the logs: {leaked}")
        if mode == "secrets":
            names = {line[4:].split("=", 1)[0] for line in logs.splitlines()
                     if line.startswith("ENV ")}
            if not names or names - ALLOWED_ENV:
                why.append(f"unexpected environment {sorted(names - ALLOWED_ENV)}")
        # The capture cap (16 KiB per stream for these runs) holds, whatever the flood.
        sizes = (len(run.stdout.encode()), len(run.stderr.encode()))
        if mode == "log-flood" and max(sizes) > 16384 + 64:
            why.append(f"log capture over its cap: {sizes} bytes")
        judge_container(mode, why, logs=logs, evidence=evidence,
                        outcome=f"{run.status.value}: {run.error_message}", problems=problems)
    assert not problems, "\n".join(problems)

    # Nothing left behind: no container, no run directory, no input modified.
    assert not [lbl for lbl in sandbox.running_labels()
                if lbl.get(sandbox.LABEL_WORKER, "").startswith("reliability@")]
    work = env.data_dir / "work"
    assert not list(work.iterdir()) if work.exists() else True
    assert shutil.disk_usage(env.data_dir).free > 1024**3

    # The platform is healthy: the engine answers, the worker lives, a normal submission works.
    assert sandbox.ping() and worker.poll() is None
    with session_scope() as s:
        phase = harness.seed_phase(s, env.data_dir, slug="after-attacks", n_cases=2,
                                   case_time_limit_s=30, memory_mb=256)
        ok_id = submit_tarball(s, phase, "alice", "static-c", EXAMPLES_OUT / "static-c.tar.gz")
    (sub,) = harness.wait_done([ok_id], timeout_s=120).values()
    assert sub.status is SubmissionStatus.SUCCEEDED, (sub.error_message, runs(ok_id))
    assert all(r.status is CaseRunStatus.SUCCEEDED for r in runs(ok_id))
    figures.record("health", "after-attacks", ok=True,
                   detail="normal submission succeeded after all hostile runs")
