"""docker-compose.yml stays valid and keeps its shape (CI runs `docker-compose config`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.worker.helpers import ROOT

SECRET = "compose-test-secret-4d1e9b"


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose")
    return subprocess.run([exe, "config"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env})


def _config(**env: str) -> dict:
    out = _run({"SECRET_KEY": SECRET, **env})
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
    assert {"postgres", "redis", "migrate", "api", "worker-gpu", "worker-cpu"} <= set(
        cfg["services"])
    gpu = cfg["services"]["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "gpu" in gpu["command"][gpu["command"].index("-Q") + 1]
    assert "/var/run/docker.sock:/var/run/docker.sock" in str(gpu["volumes"])


def test_base_image_is_a_build_argument() -> None:
    cfg = _config(BASE_IMAGE="syntharena/stack-base:local")
    for name in ("api", "migrate", "worker-gpu", "worker-cpu"):
        assert cfg["services"][name]["build"]["args"]["BASE_IMAGE"] == "syntharena/stack-base:local"
