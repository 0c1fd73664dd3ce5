"""The whole pipeline with real Celery worker processes, Redis, PostgreSQL and Docker:
submissions flow to the leaderboard; every kind of failure reaches the participant.
(A worker killed mid-run: test_worker_recovery.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from backend.db import session_scope
from backend.models import (
    AggregateResult,
    CaseRun,
    CaseRunStatus,
    Result,
    SubmissionStatus,
)
from tests.worker import harness
from tests.worker.conftest import (  # noqa: F401  (fixtures)
    clean_pipeline,
    docker_engine,
    pipeline_env,
    static_images,
)
from worker import sandbox

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker_proc(pipeline_env, python_image_built):  # noqa: F811
    proc = harness.start_worker(pipeline_env, "e2e", concurrency=2)
    yield proc
    harness.stop_worker(proc)


@pytest.fixture(scope="module")
def python_image_built(docker_engine):  # noqa: F811
    from tests.worker.helpers import ensure_example

    return ensure_example("python")


def _runs(sub_id: int) -> list[CaseRun]:
    with session_scope() as s:
        return list(s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)
                              .order_by(CaseRun.id)))


def test_submissions_flow_to_the_leaderboard(clean_pipeline, worker_proc) -> None:  # noqa: F811
    with session_scope() as s:
        single = harness.seed_phase(s, clean_pipeline.data_dir, slug="single", n_cases=3)
        batched = harness.seed_phase(s, clean_pipeline.data_dir, slug="batched", n_cases=3,
                                     batch_size=2, memory_mb=1024)
        ids = [harness.submit(s, single, "alice", "static-c").id,
               harness.submit(s, single, "bob", "python").id,
               harness.submit(s, batched, "alice", "python").id]
    subs = harness.wait_done(ids, timeout_s=180)
    for sub in subs.values():
        assert sub.status is SubmissionStatus.SUCCEEDED, (sub.error_message, _runs(sub.id))
        assert (sub.cases_done, sub.cases_total) == (3, 3) and sub.current_step == "done"
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 9
        aggs = s.scalars(select(AggregateResult)).all()
        assert len(aggs) == 3 and all(a.cases_scored == 3 for a in aggs)
        assert all(a.metrics["mae"] is not None for a in aggs)
        from backend.leaderboards import service as leaderboards
        from backend.models import Challenge, Phase

        phase = s.scalars(select(Phase).where(Phase.slug == "single")).one()
        board = leaderboards.build(s, None, s.get(Challenge, phase.challenge_id), phase)
        assert sorted(r.username for r in board.rows) == ["alice", "bob"]
        assert sorted(r.rank for r in board.rows if r.rank is not None) in ([1, 2], [1, 1])


def test_failures_reach_the_participant(clean_pipeline, worker_proc) -> None:  # noqa: F811
    cases = {
        "fail-crash": ({}, CaseRunStatus.FAILED, "exited with code 3"),
        "fail-sleep": ({"case_time_limit_s": 2}, CaseRunStatus.TIMED_OUT, "time limit of 2 s"),
        "fail-oom": ({"memory_mb": 128}, CaseRunStatus.FAILED,
                     "exceeded the memory limit of 128 MB"),
        "fail-wrong-geometry": ({}, CaseRunStatus.FAILED, "spacing (2, 2, 5) but the input"),
        "fail-no-output": ({}, CaseRunStatus.FAILED, "No synthetic CT was written"),
        "fail-nan": ({}, CaseRunStatus.FAILED, "non-finite"),
    }
    ids = {}
    with session_scope() as s:
        for example, (phase, _, _) in cases.items():
            p = harness.seed_phase(s, clean_pipeline.data_dir, slug=example, n_cases=1, **phase)
            ids[example] = harness.submit(s, p, "carol", example).id
    subs = harness.wait_done(ids.values(), timeout_s=120)
    for example, (_, status, message) in cases.items():
        sub = subs[ids[example]]
        (run,) = _runs(sub.id)
        assert run.status is status, (example, run.error_message)
        assert message in run.error_message, (example, run.error_message)
        assert sub.status is SubmissionStatus.FAILED and message in sub.error_message
    (crash,) = _runs(ids["fail-crash"])
    assert "model weights not found" in crash.stderr and crash.exit_code == 3
    assert not sandbox.running_labels()


def test_dose_metrics_reach_the_results(clean_pipeline, worker_proc) -> None:  # noqa: F811
    """A case with photon and proton plans gets its dose recomputed on the sCT."""
    import shutil

    pytest.importorskip("evaluator.dose")
    from backend.models import Case, Modality
    from evaluator.phantoms import generate_dataset

    data_dir = clean_pipeline.data_dir
    [src] = generate_dataset(data_dir / "phantom-src", "brain", 1, seed=5, plans=True)
    with session_scope() as s:
        phase = harness.seed_phase(s, data_dir, slug="dose", n_cases=0)
        inputs, gt = (data_dir / root / "ds-dose" / src.name for root in ("inputs", "groundtruth"))
        inputs.mkdir(parents=True)
        gt.mkdir(parents=True)
        for name in ("mr.mha", "mask.mha"):
            shutil.copy(src / name, inputs / name)
        for name in ("ct.mha", "labels.mha", "structures.mha", "plan_photon.json",
                     "plan_proton.json"):
            shutil.copy(src / name, gt / name)
        rel = lambda p: str(p.relative_to(data_dir))  # noqa: E731
        s.add(Case(dataset_version_id=phase.dataset_version_id, name=src.name,
                   modality=Modality.MRI, region="Brain", input_image_path=rel(inputs / "mr.mha"),
                   mask_path=rel(inputs / "mask.mha"), ground_truth_path=rel(gt / "ct.mha"),
                   labels_path=rel(gt / "labels.mha"), plan_path=rel(gt / "plan_photon.json")))
        s.flush()
        sub_id = harness.submit(s, phase, "dora", "static-c").id
    sub = harness.wait_done([sub_id], timeout_s=240)[sub_id]
    assert sub.status is SubmissionStatus.SUCCEEDED, (sub.error_message, _runs(sub_id))
    with session_scope() as s:
        (result,) = s.scalars(select(Result).where(Result.submission_id == sub_id)).all()
        metrics = result.metrics
    assert "dose_error" not in metrics, metrics.get("dose_error")
    for modality in ("photon", "proton"):
        assert 0.0 <= metrics[f"gamma_{modality}"] <= 100.0
        assert metrics[f"mae_target_{modality}"] >= 0.0
        assert metrics[f"dvh_{modality}"] >= 0.0
    # The CT dose was computed once and cached for the next submission.
    assert list((data_dir / "cache" / "dose").glob("*.npy"))
    # The viewer's dose maps and DVHs were stored beside the prediction by the worker.
    from evaluator import dose_products

    (run,) = _runs(sub_id)
    assert run.prediction_path
    npz, meta_path = dose_products.paths(data_dir / run.prediction_path, src.name)
    meta = dose_products.read_meta(meta_path)
    assert meta is not None and set(meta["modalities"]) == {"photon", "proton"}
    assert set(dose_products.read_arrays(npz)) == {
        f"{m}/{k}" for m in ("photon", "proton") for k in dose_products.KINDS}
