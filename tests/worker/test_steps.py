"""The pipeline's steps called directly (no Celery worker): idempotence under repeats."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from backend.config import settings
from backend.db import session_scope
from backend.models import (
    AggregateResult,
    CaseRun,
    CaseRunStatus,
    Result,
    Submission,
    SubmissionStatus,
)
from tests.worker import harness
from worker import steps

pytestmark = pytest.mark.docker


def _submit(env, example: str, **phase) -> int:
    with session_scope() as s:
        p = harness.seed_phase(s, env.data_dir, slug=f"p-{example}", n_cases=2, **phase)
        return harness.submit(s, p, "alice", example).id


def _runs(sub_id: int) -> list[CaseRun]:
    with session_scope() as s:
        return list(s.scalars(select(CaseRun).where(CaseRun.submission_id == sub_id)
                              .order_by(CaseRun.id)))


def _sub(sub_id: int) -> Submission:
    with session_scope() as s:
        sub = s.get(Submission, sub_id)
        assert sub is not None
        return sub


def test_every_step_twice_gives_one_result_per_case(clean_pipeline) -> None:
    sub_id = _submit(clean_pipeline, "static-c")
    steps.start_submission(sub_id)
    steps.start_submission(sub_id)  # a redelivered message
    runs = _runs(sub_id)
    assert len(runs) == 2 and _sub(sub_id).status is SubmissionStatus.RUNNING
    for r in runs:
        steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)
        steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)  # claims nothing
    runs = _runs(sub_id)
    assert all(r.status is CaseRunStatus.SUCCEEDED and r.attempts == 1 for r in runs)
    assert _sub(sub_id).status is SubmissionStatus.EVALUATING
    for r in runs:
        steps.evaluate_case(r.id)
        steps.evaluate_case(r.id)
    steps.finalize_submission(sub_id)
    steps.finalize_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.SUCCEEDED, sub.error_message
    assert (sub.cases_done, sub.cases_total) == (2, 2)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Result)) == 2
        agg = s.scalar(select(AggregateResult))
        assert agg is not None and agg.cases_scored == 2 and "mae" in agg.metrics


def test_batch_mode_runs_cases_in_one_container(clean_pipeline) -> None:
    sub_id = _submit(clean_pipeline, "static-c", batch_size=2)
    steps.start_submission(sub_id)
    runs = _runs(sub_id)
    timings = steps.run_cases(sub_id, [r.id for r in runs], worker_name="pytest", gpu=None)
    assert "docker_start" in timings
    assert all(r.status is CaseRunStatus.SUCCEEDED for r in _runs(sub_id))


def test_gpu_phase_without_gpu_fails_with_a_reason(clean_pipeline) -> None:
    sub_id = _submit(clean_pipeline, "static-c", gpu_required=True)
    steps.start_submission(sub_id)
    for r in _runs(sub_id):
        steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)
    runs = _runs(sub_id)
    assert all(r.status is CaseRunStatus.FAILED and "requires a GPU" in r.error_message
               for r in runs)
    steps.finalize_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.FAILED and "requires a GPU" in sub.error_message


def test_cancel_stops_the_running_container(clean_pipeline) -> None:
    import threading
    import time

    from backend.submissions import state

    sub_id = _submit(clean_pipeline, "fail-sleep", case_time_limit_s=60)
    steps.start_submission(sub_id)
    run = _runs(sub_id)[0]
    t = threading.Thread(target=steps.run_cases, args=(sub_id, [run.id]),
                         kwargs={"worker_name": "pytest", "gpu": None})
    t0 = time.monotonic()
    t.start()
    time.sleep(1.5)
    with session_scope() as s:
        state.transition(s, sub_id, SubmissionStatus.RUNNING, SubmissionStatus.CANCELLED)
    t.join(30)
    assert time.monotonic() - t0 < 10
    assert _runs(sub_id)[0].status is CaseRunStatus.CANCELLED


def test_unreachable_docker_engine_is_retried_then_fails_with_a_reason(
        clean_pipeline, monkeypatch, tmp_path) -> None:
    """An engine that does not answer (nothing listens on DOCKER_HOST) is an infrastructure
    fault: the case goes back to PENDING, attempts counted, until case_run_max_attempts; then
    it fails saying so, and the submission ends instead of waiting forever."""
    from backend.config import settings
    from worker import sandbox

    sub_id = _submit(clean_pipeline, "static-c")
    steps.start_submission(sub_id)  # the image is loaded on the real engine
    runs = _runs(sub_id)
    seen = []
    monkeypatch.setattr(settings, "sandbox_engine_wait_s", 0)
    with monkeypatch.context() as m:
        m.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
        sandbox._client.cache_clear()
        try:
            assert not sandbox.ping()
            for _ in range(settings.case_run_max_attempts):
                for r in runs:
                    steps.run_cases(sub_id, [r.id], worker_name="pytest", gpu=None)
                seen.append([(r.status, r.attempts) for r in _runs(sub_id)])
        finally:
            sandbox._client.cache_clear()
    assert sandbox.ping()  # the real engine again
    pending, failed = CaseRunStatus.PENDING, CaseRunStatus.FAILED
    assert seen == [[(pending, 1)] * 2, [(pending, 2)] * 2, [(failed, 3)] * 2], seen
    message = _runs(sub_id)[0].error_message
    assert "Docker engine failed while running this case, 3 times" in message, message
    assert "not a fault of the algorithm" in message and "could not be reached" in message
    steps.finalize_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.FAILED and "Docker engine" in sub.error_message


def _case_files(sub_id: int) -> dict[int, tuple[str, str]]:
    """Case run id -> (case name, input image path relative to the data dir)."""
    from backend.models import Case

    with session_scope() as s:
        return {run.id: (case.name, case.input_image_path) for run, case in s.execute(
            select(CaseRun, Case).join(Case, Case.id == CaseRun.case_id)
            .where(CaseRun.submission_id == sub_id).order_by(CaseRun.id))}


def _work_left(env) -> list[str]:
    work = env.data_dir / "work"
    return [p.name for p in work.iterdir()] if work.is_dir() else []


def test_broken_inputs_fail_their_cases_at_once_with_a_reason(clean_pipeline) -> None:
    """A case whose input file is gone (a real FileNotFoundError) and one whose compressed input
    is not an image (SimpleITK cannot read it) fail when their run is tried, saying why; they
    are not left RUNNING for the reaper, and no run directory is left behind."""
    from backend.models import Case

    sub_id = _submit(clean_pipeline, "static-c")
    steps.start_submission(sub_id)
    (missing_run, (_, missing_path)), (corrupt_run, (corrupt, _)) = \
        _case_files(sub_id).items()
    (clean_pipeline.data_dir / missing_path).unlink()
    garbage = clean_pipeline.data_dir / "inputs" / "garbage" / f"{corrupt}.nii.gz"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"\x1f\x8b not really gzip, and not an image")
    with session_scope() as s:
        run = s.get(CaseRun, corrupt_run)
        assert run is not None
        case = s.get(Case, run.case_id)
        assert case is not None
        case.input_image_path = str(garbage.relative_to(clean_pipeline.data_dir))
    for rid in (missing_run, corrupt_run):
        steps.run_cases(sub_id, [rid], worker_name="pytest", gpu=None)  # raises nothing
    runs = {r.id: r for r in _runs(sub_id)}
    assert [(r.status, r.attempts) for r in runs.values()] == [(CaseRunStatus.FAILED, 1)] * 2
    gone = runs[missing_run].error_message
    assert gone.startswith("The inputs of this case could not be prepared: No such file or "
                           f"directory ({missing_path})"), gone
    unreadable = runs[corrupt_run].error_message
    assert unreadable.startswith("The inputs of this case could not be prepared: RuntimeError")
    assert f"inputs/garbage/{corrupt}.nii.gz" in unreadable, unreadable
    for message in (gone, unreadable):
        assert "not a fault of the algorithm" in message and str(clean_pipeline.data_dir) \
            not in message
    assert _work_left(clean_pipeline) == []
    assert _sub(sub_id).status is SubmissionStatus.EVALUATING
    steps.finalize_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.FAILED and "could not be prepared" in sub.error_message


def test_transient_input_errors_are_retried_then_fail_with_a_reason(clean_pipeline,
                                                                    monkeypatch) -> None:
    """An I/O error that may pass (EIO from the storage: cannot be caused for real here, so it
    is injected where the inputs are provisioned) gives the case back like an engine fault:
    PENDING with its attempt counted. A case whose storage recovers then succeeds; one whose
    storage keeps failing fails after case_run_max_attempts, saying so."""
    import errno

    from backend.config import settings

    sub_id = _submit(clean_pipeline, "static-c")
    steps.start_submission(sub_id)
    (recovers, (_, recovers_path)), (broken, (broken_name, _)) = _case_files(sub_id).items()
    real = steps.provision_inputs
    failures = {"recovers": 1}

    def flaky(input_dir, cases, cache_dir):  # type: ignore[no-untyped-def]
        if cases[0].name == broken_name or failures["recovers"] > 0:
            failures["recovers"] -= cases[0].name != broken_name
            raise OSError(errno.EIO, "Input/output error",
                          str(clean_pipeline.data_dir / recovers_path))
        return real(input_dir, cases, cache_dir)

    monkeypatch.setattr(steps, "provision_inputs", flaky)
    monkeypatch.setattr(steps, "PROVISION_RETRY_PAUSE_S", 0)
    seen = []
    for _ in range(settings.case_run_max_attempts):
        for rid in (recovers, broken):
            if next(r for r in _runs(sub_id) if r.id == rid).status is CaseRunStatus.PENDING:
                steps.run_cases(sub_id, [rid], worker_name="pytest", gpu=None)
        seen.append([(r.status.value, r.attempts) for r in _runs(sub_id)])
    assert seen == [[("pending", 1), ("pending", 1)], [("succeeded", 2), ("pending", 2)],
                    [("succeeded", 2), ("failed", 3)]], seen
    message = next(r for r in _runs(sub_id) if r.id == broken).error_message
    assert message.startswith("The inputs of this case could not be prepared, 3 times"), message
    assert f"Last error: Input/output error ({recovers_path})" in message, message
    assert _work_left(clean_pipeline) == []


@pytest.mark.parametrize("configured", ["cpu", "cuda", "auto"])
def test_eval_device_follows_the_setting(
    configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from backend.config import settings

    monkeypatch.setattr(settings, "eval_device", configured)
    expected = {"cpu": "cpu", "cuda": "cuda",
                "auto": "cuda" if torch.cuda.is_available() else "cpu"}[configured]
    assert steps.eval_device() == expected


def test_image_from_s3_storage_and_an_unreachable_storage(
    clean_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the image storage on S3 (a real S3-protocol server), a worker fetches the
    tarball into its cache and runs it; while the storage is unreachable the submission is
    retried a bounded number of times and then failed as the storage's fault, not the
    algorithm's (never left to the reaper)."""
    pytest.importorskip("moto.server")
    from backend.config import settings
    from backend.models import AlgorithmImage
    from backend.storage import S3Storage
    from tests.s3_server import S3Server, upload_data_dir, use_s3

    server = S3Server()
    server.start()
    try:
        use_s3(monkeypatch, server)
        monkeypatch.setattr(steps, "PROVISION_RETRY_PAUSE_S", 0.0)
        with session_scope() as s:
            p = harness.seed_phase(s, clean_pipeline.data_dir, slug="p-s3", n_cases=1)
            ok_id = harness.submit(s, p, "alice", "static-c").id
            down_id = harness.submit(s, p, "bob", "static-c").id
            keys = {sid: s.get(AlgorithmImage, s.get(Submission, sid).image_id).storage_key
                    for sid in (ok_id, down_id)}
        for key in keys.values():  # uploaded: the bytes live in the bucket only
            S3Storage().put_file(settings.images_dir / key, key)
            (settings.images_dir / key).unlink()
        assert upload_data_dir(settings.data_dir) > 0  # the cases' inputs and ground truth
        steps.start_submission(ok_id)
        from backend.object_cache import cache

        stats = cache().stats()  # fetched once into this host's object cache
        assert stats["misses"] == 1 and stats["entries"] == 1
        run = _runs(ok_id)[0]
        steps.run_cases(ok_id, [run.id], worker_name="pytest", gpu=None)
        assert _runs(ok_id)[0].status is CaseRunStatus.SUCCEEDED
        server.stop()
        steps.start_submission(down_id)
        sub = _sub(down_id)
        assert sub.status is SubmissionStatus.FAILED
        assert "could not be read from the image storage, 3 times" in sub.error_message
        assert "not a fault of the algorithm" in sub.error_message
    finally:
        server.stop()
        from backend import storage

        storage.get_storage.cache_clear()  # the next test's settings pick the storage


def test_prediction_storage_errors_are_retried_or_named(
    clean_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error that may pass (EIO) while storing a prediction gives the case back (it
    runs again and succeeds); any other (EACCES) fails it at once, named as the server's
    storage fault. Neither is left to the reaper. (The errors are injected: a real EIO
    cannot be caused here.)"""
    import errno
    import shutil as real_shutil

    from backend.config import settings

    copyfile = real_shutil.copyfile
    failures: list[int] = []

    def flaky_copy(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if failures and Path(dst).is_relative_to(settings.predictions_dir):
            raise OSError(failures.pop(0), "injected", str(dst))
        return copyfile(src, dst, *args, **kwargs)

    monkeypatch.setattr(real_shutil, "copyfile", flaky_copy)
    monkeypatch.setattr(steps, "PROVISION_RETRY_PAUSE_S", 0.0)
    sub_id = _submit(clean_pipeline, "static-c")
    steps.start_submission(sub_id)
    first, second = _runs(sub_id)
    failures[:] = [errno.EIO]
    steps.run_cases(sub_id, [first.id], worker_name="pytest", gpu=None)
    run = _runs(sub_id)[0]
    assert run.status is CaseRunStatus.PENDING and run.attempts == 1  # given back
    steps.run_cases(sub_id, [first.id], worker_name="pytest", gpu=None)
    run = _runs(sub_id)[0]
    assert run.status is CaseRunStatus.SUCCEEDED and run.attempts == 2
    assert run.prediction_path and (settings.data_dir / run.prediction_path).is_file()
    failures[:] = [errno.EACCES]
    steps.run_cases(sub_id, [second.id], worker_name="pytest", gpu=None)
    run = _runs(sub_id)[1]
    assert run.status is CaseRunStatus.FAILED and run.attempts == 1
    assert "The prediction could not be stored (injected" in run.error_message
    assert "not a fault of the algorithm" in run.error_message
    stored = sorted(p.name for p in (settings.predictions_dir / str(sub_id)).iterdir())
    assert stored == [Path(_runs(sub_id)[0].prediction_path or "").name]  # no partial file


def test_an_unexpected_image_fault_fails_the_submission_with_a_reason(clean_pipeline,
                                                                      tmp_path: Path) -> None:
    """An image whose stored tarball is a symlink out of the storage (the storage refuses to
    follow it: ValueError) fails the submission with the reason, never leaves it loading."""
    outside = tmp_path / "elsewhere.tar.gz"
    outside.write_bytes(b"not inside the storage")
    with session_scope() as s:
        p = harness.seed_phase(s, clean_pipeline.data_dir, slug="p-symlink", n_cases=1)
        owner = harness.user(s, "mallory")
        image = harness.register_tarball(s, owner, "linked", outside)
        stored = settings.images_dir / image.storage_key
        stored.unlink()
        stored.symlink_to(outside)
        sub = Submission(phase_id=p.id, user_id=owner.id, image_id=image.id,
                         status=SubmissionStatus.PENDING)
        s.add(sub)
        s.flush()
        sub_id = sub.id
    steps.start_submission(sub_id)
    sub = _sub(sub_id)
    assert sub.status is SubmissionStatus.FAILED
    assert "could not be loaded" in sub.error_message
    assert "escapes the storage root" in sub.error_message
