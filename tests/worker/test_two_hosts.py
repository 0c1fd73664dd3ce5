"""Two worker hosts with nothing shared but PostgreSQL, Redis and object storage (issue 17): a
GPU-queue worker and an eval worker, each its own process with its own data directory, both
talking to a real S3-protocol server that enforces IAM policies (moto's). The GPU worker holds
keys for the data bucket only; the eval worker also for ground truth. Predictions travel from
one to the other through the bucket; each host's object cache counts its hits and misses."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from backend import storage
from backend.config import settings
from backend.db import session_scope
from backend.models import AlgorithmImage, Result, Submission, SubmissionStatus
from backend.storage import data_storage, get_storage, groundtruth_storage
from tests.s3_server import (
    S3Server,
    enforce_iam,
    no_ambient_credentials,
    relax_iam,
    role_settings,
    upload_data_dir,
)
from tests.worker import harness

pytest.importorskip("moto.server")
log = logging.getLogger(__name__)


def _host_env(base: dict[str, str], data_dir: Path, values: dict[str, Any]) -> dict[str, str]:
    env = {**base, "SYNTHARENA_DATA_DIR": str(data_dir), "NO_PROXY": "127.0.0.1"}
    for name, value in values.items():
        var = f"SYNTHARENA_{name.upper()}"
        if value is None:
            env.pop(var, None)
        else:
            env[var] = str(value)
    return env


def _cache_stats() -> dict[str, dict[str, int]]:
    from worker.celery_app import app

    replies = app.control.broadcast("cache_stats", reply=True, timeout=5) or []
    return {node.split("@")[0]: stats for reply in replies for node, stats in reply.items()}


def _blob_shas(data_dir: Path) -> set[str]:
    return {p.name[:64] for p in (data_dir / "cache" / "objects" / "blobs").glob("*/*")}


def test_predictions_travel_from_the_gpu_host_to_the_eval_host_through_storage(
    clean_pipeline: harness.PipelineEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = S3Server()
    server.start()
    procs = []
    try:
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        no_ambient_credentials(monkeypatch)  # also for the worker processes (they inherit it)
        roles = enforce_iam(server)
        # This process is the API host: it imports datasets, so it holds both roles' keys.
        for name, value in role_settings(server, roles.eval, roles.eval).items():
            monkeypatch.setattr(settings, name, value)
        storage.clear_caches()
        with session_scope() as s:
            phase = harness.seed_phase(s, clean_pipeline.data_dir, slug="p-2h", n_cases=2)
            sub_ids = [harness.submit(s, phase, u, "static-c").id for u in ("alice", "bob")]
            image_keys = [s.get(AlgorithmImage, s.get(Submission, i).image_id).storage_key
                          for i in sub_ids]
        for key in image_keys:
            get_storage().put_file(settings.images_dir / key, key)
            (settings.images_dir / key).unlink()
        assert upload_data_dir(clean_pipeline.data_dir) == 6  # 2 cases x (MR, mask, CT)
        gt_keys = groundtruth_storage().keys("groundtruth/")
        gt_shas = {groundtruth_storage().head(k).sha256 for k in gt_keys}
        assert len(gt_keys) == 2 and None not in gt_shas

        base = clean_pipeline.env()
        gpu_dir, eval_dir = tmp_path / "gpu-host", tmp_path / "eval-host"
        gpu_env = _host_env(base, gpu_dir, role_settings(server, roles.gpu, None))
        eval_env = _host_env(base, eval_dir, role_settings(server, roles.eval, roles.eval))
        procs.append(harness.start_worker(clean_pipeline, "gpuhost", concurrency=1,
                                          queues=("images", "gpu"),
                                          log_path=tmp_path / "gpu.log", env=gpu_env))
        procs.append(harness.start_worker(clean_pipeline, "evalhost", concurrency=1,
                                          queues=("eval",), log_path=tmp_path / "eval.log",
                                          env=eval_env))
        harness.wait_ready("gpuhost")
        harness.wait_ready("evalhost")
        done = harness.wait_done(sub_ids, timeout_s=300)
        logs = "".join((tmp_path / n).read_text() for n in ("gpu.log", "eval.log"))
        assert [done[i].status for i in sub_ids] == [SubmissionStatus.SUCCEEDED] * 2, logs
        with session_scope() as s:
            results = s.scalars(select(Result).where(Result.submission_id.in_(sub_ids))).all()
            assert len(results) == 4 and all("mae" in r.metrics for r in results), logs

        # The predictions are in the bucket, and on neither host's data directory as files.
        predictions = data_storage().keys("predictions/")
        assert len(predictions) == 4, predictions
        for host in (gpu_dir, eval_dir, clean_pipeline.data_dir):
            assert not (host / "predictions").exists()
        # The GPU host never held ground truth; the eval host fetched it through its cache.
        assert not _blob_shas(gpu_dir) & gt_shas
        assert gt_shas <= _blob_shas(eval_dir)
        stats = _cache_stats()
        log.warning("object cache per host: %s", stats)
        gpu, ev = stats["gpuhost"], stats["evalhost"]
        # Content-addressed: each distinct content is fetched once per host, every other read
        # is a hit (the phantoms' masks are identical; both users uploaded the same tarball).
        inputs = data_storage().keys("inputs/")
        masks = [k for k in inputs if k.endswith("mask.mha")]
        gpu_contents = {get_storage().head(image_keys[0]).sha256} | _shas(inputs)
        eval_contents = gt_shas | _shas(masks) | _shas(predictions)
        # GPU host: 2 image loads (one per submission) + 2 submissions x 2 cases x 2 inputs.
        assert (gpu["misses"], gpu["hits"], gpu["corrupt"]) == (
            len(gpu_contents), 2 + 8 - len(gpu_contents), 0), stats
        # Eval host: 4 scored cases x (prediction, CT, mask).
        assert (ev["misses"], ev["hits"], ev["corrupt"]) == (
            len(eval_contents), 12 - len(eval_contents), 0), stats
        assert ev["hits"] > 0 and gpu["hits"] > 0
        assert _sha_of_bucket_object(predictions[0]) in _blob_shas(eval_dir)
    finally:
        for proc in procs:
            harness.stop_worker(proc)
        relax_iam(server)
        server.stop()
        storage.clear_caches()


def _shas(keys: list[str]) -> set[str | None]:
    return {storage.storage_for(k).head(k).sha256 for k in keys}


def _sha_of_bucket_object(key: str) -> str:
    sha = data_storage().head(key).sha256  # recorded by the GPU host when it stored it
    assert sha is not None
    return sha
