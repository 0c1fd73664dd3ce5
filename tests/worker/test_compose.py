"""docker-compose.yml stays valid and keeps its shape (CI runs `docker-compose config`; the
stack itself is brought up by tests/compose)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.worker.helpers import ROOT

SECRET = "compose-test-secret-4d1e9b"
GT_KEYS = {"SYNTHARENA_GT_S3_ACCESS_KEY_ID", "SYNTHARENA_GT_S3_SECRET_ACCESS_KEY"}


def _run(env: dict[str, str], *files: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose")
    args = [a for f in files for a in ("-f", f)]
    return subprocess.run([exe, *args, "config"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env})


def _config(*files: str, **env: str) -> dict:
    out = _run({"SECRET_KEY": SECRET, **env}, *files)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_requires_a_secret_key() -> None:
    """No placeholder fallback: without SECRET_KEY the stack does not start, and says why."""
    missing = _run({})
    assert missing.returncode != 0
    assert "set SECRET_KEY" in missing.stderr
    cfg = _config()
    assert {s["environment"]["SYNTHARENA_SECRET_KEY"] for s in cfg["services"].values()
            if "SYNTHARENA_SECRET_KEY" in s.get("environment", {})} == {SECRET}


def test_compose_file_is_valid_and_complete() -> None:
    cfg = _config()
    services = cfg["services"]
    assert {"postgres", "redis", "s3", "migrate", "api", "worker-gpu", "worker-cpu"} <= set(
        services)
    gpu = services["worker-gpu"]
    assert "gpu" in gpu["command"][gpu["command"].index("-Q") + 1]
    assert "/var/run/docker.sock:/var/run/docker.sock" in str(gpu["volumes"])
    assert gpu["environment"]["SYNTHARENA_WORKER_GPU_IDS"] == '["0"]'


def test_only_the_api_and_eval_worker_hold_ground_truth_keys() -> None:
    services = _config()["services"]
    holders = {name for name, s in services.items() if set(s.get("environment", {})) >= GT_KEYS}
    assert holders == {"api", "worker-cpu"}
    assert not GT_KEYS & set(services["worker-gpu"]["environment"])


def test_workers_tell_the_engine_the_host_path_of_their_work_dir() -> None:
    """No same-path rule: a host folder is the worker's data dir, and its work/ is named in
    SYNTHARENA_HOST_WORK_DIR, which the worker uses for the containers' bind mounts."""
    services = _config(GPU_DATA_DIR="/srv/gpu")["services"]
    for name in ("worker-gpu", "worker-cpu"):
        env = services[name]["environment"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert f"{mounts[env['SYNTHARENA_DATA_DIR']]}/work" == env["SYNTHARENA_HOST_WORK_DIR"]
    assert services["worker-gpu"]["environment"]["SYNTHARENA_HOST_WORK_DIR"] == "/srv/gpu/work"


def test_cpu_override_pins_no_gpu() -> None:
    cfg = _config("docker-compose.yml", "docker-compose.cpu.yml")
    assert cfg["services"]["worker-gpu"]["environment"]["SYNTHARENA_WORKER_GPU_IDS"] == "[]"


def test_base_and_service_images_are_settable() -> None:
    cfg = _config(BASE_IMAGE="syntharena/stack-base:local",
                  POSTGRES_IMAGE="syntharena/postgres:15-local",
                  REDIS_IMAGE="syntharena/redis:7-local")
    for name in ("api", "migrate", "worker-gpu", "worker-cpu", "s3"):
        assert cfg["services"][name]["build"]["args"]["BASE_IMAGE"] == "syntharena/stack-base:local"
    assert cfg["services"]["postgres"]["image"] == "syntharena/postgres:15-local"
    assert cfg["services"]["redis"]["image"] == "syntharena/redis:7-local"
