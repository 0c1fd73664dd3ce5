"""Platform overhead per case and end-to-end time of a phase, on the real stack.

    .venv/bin/python benchmarks/pipeline.py [--cases 20] [--batch 5] [--image static-c]

Overhead per case = wall time of (claim -> provision /input -> container create/start ->
wait -> collect logs -> remove -> validate sCT -> record -> score) minus the algorithm's own
run time inside the container. Measured for batch size 1 and N with the steps called
directly, then end to end through Celery (a worker subprocess) for a whole phase.
Reference printed next to it: a bare `docker run --rm` of the same image (the floor any
Docker-based platform pays) and the goal of < 1 s per case.
Needs PostgreSQL, Redis and Docker (scripts/services.sh) and the example images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SYNTHARENA_DEV_MODE", "1")  # a scratch stack: the dev secret is fine

from sqlalchemy import select

from backend.db import session_scope
from backend.models import CaseRun, SubmissionStatus
from tests.worker import harness
from tests.worker.helpers import ensure_example
from worker import sandbox, steps

GOAL_S = 1.0


def _seed(env: harness.PipelineEnv, slug: str, n: int, batch: int) -> int:
    with session_scope() as s:
        return harness.seed_phase(s, env.data_dir, slug=slug, n_cases=n, batch_size=batch).id


def _submit(phase_id: int, image: str, user: str) -> int:
    from backend.models import Phase

    with session_scope() as s:
        phase = s.get(Phase, phase_id)
        assert phase is not None
        return harness.submit(s, phase, user, image).id  # enqueued on commit


def _run_ids(sub_id: int) -> list[int]:
    with session_scope() as s:
        return list(s.scalars(select(CaseRun.id).where(CaseRun.submission_id == sub_id)
                              .order_by(CaseRun.id)))


def overhead(env: harness.PipelineEnv, image: str, n: int, batch: int) -> dict[str, float]:
    sub_id = _submit(_seed(env, f"oh-b{batch}", n, batch), image, f"bench-b{batch}")
    steps.start_submission(sub_id)  # image load (cached) + case runs; not per-case overhead
    run_ids = _run_ids(sub_id)
    per_case: list[float] = []
    no_score: list[float] = []
    algo_total = 0.0
    parts: dict[str, list[float]] = {}
    for i in range(0, len(run_ids), batch):
        chunk = run_ids[i : i + batch]
        t0 = time.perf_counter()
        timings = steps.run_cases(sub_id, chunk, worker_name="bench", gpu=None)
        t1 = time.perf_counter()
        for rid in chunk:
            steps.evaluate_case(rid)
        t2 = time.perf_counter()
        algo = timings.get("algorithm", 0.0)
        algo_total += algo
        timings["score"] = t2 - t1
        for k, v in timings.items():
            parts.setdefault(k, []).append(v / len(chunk))
        per_case.extend([(t2 - t0 - algo) / len(chunk)] * len(chunk))
        no_score.extend([(t1 - t0 - algo) / len(chunk)] * len(chunk))
    steps.finalize_submission(sub_id)
    with session_scope() as s:
        from backend.models import Submission

        sub = s.get(Submission, sub_id)
        assert sub is not None and sub.status is SubmissionStatus.SUCCEEDED, sub and sub.status
    return {"mean": statistics.mean(per_case), "median": statistics.median(per_case),
            "platform_mean": statistics.mean(no_score),
            "algorithm_per_case": algo_total / n,
            **{f"part_{k}": statistics.mean(v) for k, v in parts.items()}}


def docker_run_reference(image: str, reps: int = 5) -> float:
    times = []
    with tempfile.TemporaryDirectory() as d:
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{d}:/input:ro",
                            "--entrypoint", "/synth", image, "--mode=crash"],
                           capture_output=True, check=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def end_to_end(env: harness.PipelineEnv, image: str, n: int, batch: int,
               concurrency: int) -> float:
    proc = harness.start_worker(env, "bench", concurrency=concurrency)
    try:
        phase_id = _seed(env, f"e2e-b{batch}", n, batch)  # the organiser's part, not timed
        time.sleep(3)  # worker boot is not part of a submission's time
        t0 = time.perf_counter()
        sub_id = _submit(phase_id, image, f"e2e-b{batch}")
        (sub,) = harness.wait_done([sub_id], timeout_s=600).values()
        elapsed = time.perf_counter() - t0
        assert sub.status is SubmissionStatus.SUCCEEDED, sub.error_message
        return elapsed
    finally:
        harness.stop_worker(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--image", default="static-c")
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args()

    tag = ensure_example(args.image)
    data = Path(tempfile.mkdtemp(prefix="syntharena-bench-"))
    env = harness.setup("syntharena_bench", data, redis_db=8)
    print(f"SynthArena pipeline benchmark: image {args.image}, phantom cases 48x64x64, "
          f"{args.cases} cases")
    ref = docker_run_reference(tag)
    import os

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"reference  bare `docker run --rm` (CLI, no work)      {ref:6.3f} s per container")
    for batch in (1, args.batch):
        r = overhead(env, args.image, args.cases, batch)
        parts = ", ".join(f"{k.removeprefix('part_')} {v * 1000:.0f} ms"
                          for k, v in r.items() if k.startswith("part_"))
        print(f"overhead   batch {batch:<2}  mean {r['mean']:6.3f} s/case  median "
              f"{r['median']:6.3f} s/case  (algorithm {r['algorithm_per_case']:.3f} s/case "
              f"excluded; goal < {GOAL_S:g} s)")
        print(f"           of which platform (sandbox + I/O + DB, scoring excluded) "
              f"{r['platform_mean']:6.3f} s/case")
        print(f"           per case: {parts}")
    harness.truncate_all()
    harness.flush_redis(env)  # the direct calls above enqueued follow-ups nobody consumed
    for batch in (1, args.batch):
        e2e = end_to_end(env, args.image, args.cases, batch, args.concurrency)
        print(f"end-to-end {args.cases}-case phase, batch {batch:<2}, {args.concurrency} worker "
              f"children: {e2e:6.2f} s ({e2e / args.cases:.3f} s/case)")
    sandbox.remove_containers(**{sandbox.LABEL_WORKER: "bench"})


if __name__ == "__main__":
    main()
