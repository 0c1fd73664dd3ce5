"""docker-compose.yml stays valid and keeps its shape (CI runs `docker-compose config`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.worker.helpers import ROOT


def _config(**env: str) -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: apt-get install -y docker-compose")
    out = subprocess.run([exe, "config"], cwd=ROOT, check=True, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env})
    return yaml.safe_load(out.stdout)


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
