"""Hostile image configs and archives through the real pipeline (Celery worker, Redis,
PostgreSQL, Docker), issue #15. The images are registered as stored tarballs without the
upload check, so what is tested here is the worker's own defence at run time:

- a VOLUME (the engine would back it with a writable volume on the host's disk, no cap),
- USER spellings that mean uid 0 (numeric forms, a name the image's passwd maps to 0),
- archives the engine cannot load (200 layers, a layer that is not a tar): the submission
  fails with the reason instead of staying "loading the algorithm image" forever,
- a grand-challenge-style container (GC's inputs.json, output file named output.mha).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from backend.db import session_scope
from backend.models import CaseRunStatus, SubmissionStatus
from tests.reliability import figures, image_tars
from tests.reliability.conftest import ReliabilityEnv
from tests.reliability.helpers import hostile_worker, judge_container, runs, submit_tarball
from tests.worker import harness
from tests.worker.helpers import EXAMPLES_OUT, ensure_example
from worker import sandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Writes 1 MB blocks to the image's VOLUME until a write fails (5 GB on the engine's disk
# before the fix), then reports how far it got and exits 42 (the case fails either way).
VOLUME_FILL_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    static char block[1 << 20];
    memset(block, 0x5A, sizeof block);
    int fd = open("/data/fill.bin", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) { printf("contained open /data: %s\n", strerror(errno)); return 42; }
    long mb = 0;
    while (mb < 5120 && write(fd, block, sizeof block) == (ssize_t)sizeof block) mb++;
    printf("%s volume write after %ld MB: %s\n", mb >= 5120 ? "BREACH" : "contained", mb,
           strerror(errno));
    fflush(stdout);
    return 42;
}
"""
TMP_MB = 16  # SANDBOX_ENV's SYNTHARENA_SANDBOX_TMP_MB: the tmpfs over a VOLUME gets this cap


def _volume_image(tmp: Path) -> Path:
    ctx = tmp / "volume-fill"
    ctx.mkdir()
    (ctx / "fill.c").write_text(VOLUME_FILL_C)
    subprocess.run(["gcc", "-O2", "-static", "-o", str(ctx / "fill"), str(ctx / "fill.c")],
                   check=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY fill /fill\nVOLUME /data\n"
                                    "USER 1000:1000\nENTRYPOINT [\"/fill\"]\n")
    tag = "syntharena-hostile/volume-fill:latest"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True,
                   capture_output=True)
    out = tmp / "volume-fill.tar"
    subprocess.run(["docker", "save", "-o", str(out), tag], check=True)
    return out


@pytest.fixture(scope="module")
def worker(reliability_env: ReliabilityEnv):
    with hostile_worker(reliability_env, "rel-configs") as proc:
        yield proc


def test_hostile_image_configs_are_contained(clean_env: ReliabilityEnv, worker: Any,
                                             tmp_path: Path) -> None:
    env = clean_env
    tarballs = {
        "config:volume": _volume_image(tmp_path),
        "config:user-00": image_tars.user_image(tmp_path / "u00.tar", "00"),
        "config:user-name-mapped-to-0": image_tars.user_image(tmp_path / "ualg.tar",
                                                             "algorithm"),
        "load:many-layers": image_tars.many_layers(tmp_path / "many.tar"),
        "load:layer-not-a-tar": image_tars.layer_not_a_tar(tmp_path / "nottar.tar"),
    }
    # (case status or None: no case runs, submission error words, case error words, evidence)
    expect: dict[str, tuple[CaseRunStatus | None, str, str, str]] = {
        "config:volume": (CaseRunStatus.FAILED, "", "exited with code 42",
                          "contained volume write"),
        "config:user-00": (CaseRunStatus.FAILED, "", "USER 00 is uid 0", ""),
        "config:user-name-mapped-to-0": (CaseRunStatus.FAILED, "",
                                         "uid 0 in the image's own /etc/passwd", ""),
        "load:many-layers": (None, "too many layers", "", ""),
        "load:layer-not-a-tar": (None, "could not load the image", "", ""),
    }
    volumes_before = {v.name for v in sandbox.client().volumes.list()}
    ids: dict[str, int] = {}
    with session_scope() as s:
        for name, tarball in tarballs.items():
            phase = harness.seed_phase(s, env.data_dir, slug=name.replace(":", "-"),
                                       n_cases=1, case_time_limit_s=20, memory_mb=128,
                                       cpus=1.0)
            ids[name] = submit_tarball(s, phase, "mallory", name.replace(":", "-"), tarball)
    subs = harness.wait_done(ids.values(), timeout_s=300)
    problems: list[str] = []
    for name, (status, sub_words, case_words, evidence) in expect.items():
        sub = subs[ids[name]]
        case_runs = runs(sub.id)
        logs = "\n".join(r.stdout + r.stderr for r in case_runs)
        why: list[str] = []
        if sub.status is not SubmissionStatus.FAILED:
            why.append(f"submission {sub.status.value}")
        if sub_words and sub_words not in sub.error_message:
            why.append(f"submission message {sub.error_message!r} lacks {sub_words!r}")
        if status is None and case_runs:
            why.append(f"{len(case_runs)} case runs for an image that never loaded")
        for r in case_runs if status is not None else []:
            if r.status is not status:
                why.append(f"case {r.status.value}")
            if case_words not in r.error_message:
                why.append(f"case message {r.error_message!r} lacks {case_words!r}")
        outcome = sub.error_message or "; ".join(r.error_message for r in case_runs)
        judge_container(name, why, logs=logs, evidence=evidence,
                        outcome=f"{sub.status.value}: {outcome}", problems=problems)
    assert not problems, "\n".join(problems)
    # No Docker volume was created for the VOLUME: its writes went to a capped tmpfs.
    assert {v.name for v in sandbox.client().volumes.list()} <= volumes_before
    written = re.search(r"after (\d+) MB", "".join(r.stdout for r in runs(ids["config:volume"])))
    assert written and int(written.group(1)) <= TMP_MB, written


def test_grand_challenge_style_container_succeeds(clean_env: ReliabilityEnv,
                                                  worker: Any) -> None:
    ensure_example("gc-style")
    with session_scope() as s:
        phase = harness.seed_phase(s, clean_env.data_dir, slug="gc-style", n_cases=2,
                                   case_time_limit_s=60, memory_mb=1024, batch_size=1)
        sub_id = submit_tarball(s, phase, "grace", "gc-style", EXAMPLES_OUT / "gc-style.tar.gz")
    (sub,) = harness.wait_done([sub_id], timeout_s=300).values()
    case_runs = runs(sub_id)
    ok = sub.status is SubmissionStatus.SUCCEEDED and \
        all(r.status is CaseRunStatus.SUCCEEDED for r in case_runs)
    figures.record("health", "grand-challenge-style", ok=ok,
                   detail=f"{sub.status.value}: {[r.error_message for r in case_runs]}")
    assert ok, (sub.error_message, [r.error_message for r in case_runs])
