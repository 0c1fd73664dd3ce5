"""The sandbox against the real Docker engine: limits, failures, cleanup."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.worker.helpers import EXAMPLES_OUT, write_case
from worker import sandbox
from worker.provision import OutputError, find_outputs, provision_inputs, validate_output

pytestmark = pytest.mark.docker

LABELS = {sandbox.LABEL_WORKER: "pytest-sandbox"}


def _run(tmp_path: Path, image: str, *, batch: int = 1, compress: bool = True,
         **limits: object) -> tuple[sandbox.SandboxResult, list, Path]:
    cases = [write_case(tmp_path, f"1BA00{i}", compress=compress, seed=i) for i in range(batch)]
    inp, out = tmp_path / "run" / "input", tmp_path / "run" / "output"
    inp.mkdir(parents=True)
    provision_inputs(inp, cases, tmp_path / "cache")
    args: dict = {"time_limit_s": 30, "memory_bytes": 256 * 1024**2, "cpus": 1.0}
    args.update(limits)
    res = sandbox.run_container(image, input_dir=inp, output_dir=out,
                                limits=sandbox.SandboxLimits(**args), labels=LABELS)
    return res, cases, out


def _no_leftovers() -> None:
    mine = [c for c in sandbox.running_labels() if c.get(sandbox.LABEL_WORKER) == "pytest-sandbox"]
    assert not mine
    assert sandbox.remove_containers(**LABELS) == 0


def test_static_image_maps_mr_to_hu(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, cases, out = _run(tmp_path, static_images["static-c"])
    assert res.ok, (res.error_message, res.stderr)
    assert res.exit_code == 0 and "mode=map" in res.stdout
    path = validate_output(cases[0], find_outputs(out)[cases[0].name], batch=False)
    assert path.name == "1BA000.mha"
    _no_leftovers()


def test_batch_of_cases_in_one_container(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, cases, out = _run(tmp_path, static_images["static-c"], batch=3)
    assert res.ok
    found = find_outputs(out)
    for case in cases:
        validate_output(case, found.get(case.name, []), batch=True)


def test_crash_reports_exit_code_and_logs(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, _, _ = _run(tmp_path, static_images["fail-crash"])
    assert res.exit_code == 3 and not res.timed_out and not res.oom_killed
    assert "exited with code 3" in res.error_message
    assert "model weights not found" in res.stderr
    _no_leftovers()


def test_timeout_kills_container(tmp_path: Path, static_images: dict[str, str]) -> None:
    t0 = time.perf_counter()
    res, _, _ = _run(tmp_path, static_images["fail-sleep"], time_limit_s=2)
    assert res.timed_out and "time limit of 2 s" in res.error_message
    assert time.perf_counter() - t0 < 15
    _no_leftovers()


def test_oom_is_reported_with_the_limit(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, _, _ = _run(tmp_path, static_images["fail-oom"], memory_bytes=128 * 1024**2)
    assert res.oom_killed and res.exit_code == 137
    assert "exceeded the memory limit of 128 MB" in res.error_message
    _no_leftovers()


def test_wrong_geometry_is_rejected(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, cases, out = _run(tmp_path, static_images["fail-wrong-geometry"])
    assert res.ok
    with pytest.raises(OutputError, match="spacing"):
        validate_output(cases[0], find_outputs(out).get(cases[0].name, []), batch=False)


def test_missing_output_is_rejected(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, cases, out = _run(tmp_path, static_images["fail-no-output"])
    assert res.ok
    with pytest.raises(OutputError, match="No synthetic CT"):
        validate_output(cases[0], find_outputs(out).get(cases[0].name, []), batch=False)


def test_nan_output_is_rejected(tmp_path: Path, static_images: dict[str, str]) -> None:
    _, cases, out = _run(tmp_path, static_images["fail-nan"])
    with pytest.raises(OutputError, match="non-finite"):
        validate_output(cases[0], find_outputs(out).get(cases[0].name, []), batch=False)


def test_python_template_image(tmp_path: Path, python_image: str) -> None:
    res, cases, out = _run(tmp_path, python_image, batch=2, memory_bytes=1024**3)
    assert res.ok, res.stderr
    found = find_outputs(out)
    for case in cases:
        validate_output(case, found.get(case.name, []), batch=True)
    assert (out / "results.json").exists()


def test_sandbox_is_locked_down(tmp_path: Path, python_image: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Inspect the container config the engine got (network, caps, ro, user, limits)."""
    from docker.models.containers import ContainerCollection

    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    seen: dict = {}
    real_create = ContainerCollection.create

    def spy(self: ContainerCollection, image: str, **kw: object):
        c = real_create(self, image, **kw)
        seen.update(self.client.api.inspect_container(c.id))
        return c

    monkeypatch.setattr(ContainerCollection, "create", spy)
    sandbox.run_container(python_image, input_dir=inp, output_dir=out,
                          limits=sandbox.SandboxLimits(time_limit_s=20, memory_bytes=512 * 1024**2,
                                                       cpus=0.5, pids_limit=64),
                          labels=LABELS)
    hc = seen["HostConfig"]
    assert hc["NetworkMode"] == "none"
    assert hc["Memory"] == hc["MemorySwap"] == 512 * 1024**2
    assert hc["NanoCpus"] == 500_000_000 and hc["PidsLimit"] == 64
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert hc["ReadonlyRootfs"] is True and "/tmp" in hc["Tmpfs"] and hc["Init"] is True
    assert seen["Config"]["User"] == "1000:1000"
    binds = {b.split(":")[1]: b.split(":")[2] for b in hc["Binds"]}
    assert binds == {"/input": "ro", "/output": "rw"}
    _no_leftovers()


def test_root_image_is_refused(tmp_path: Path, docker_engine: None) -> None:
    import subprocess

    root_tag = "syntharena-test/root:latest"
    subprocess.run(["docker", "tag", "syntharena/python-base:bookworm", root_tag], check=True)
    with pytest.raises(sandbox.SandboxError, match="runs as root"):
        sandbox.run_container(root_tag, input_dir=tmp_path, output_dir=tmp_path / "o",
                              limits=sandbox.SandboxLimits(time_limit_s=5), labels=LABELS)


def test_load_image_from_tarball_is_cached(static_images: dict[str, str]) -> None:
    image_id = sandbox.load_image(EXAMPLES_OUT / "fail-crash.tar.gz")
    assert image_id.startswith("sha256:")
    # Cached: a known id never reads the tarball.
    assert sandbox.load_image(Path("/nonexistent.tar.gz"), expected_id=image_id) == image_id
    with pytest.raises(sandbox.SandboxError, match="not the validated"):
        sandbox.load_image(EXAMPLES_OUT / "fail-crash.tar.gz", expected_id="sha256:" + "0" * 64)


def test_reaper_removes_leftovers(static_images: dict[str, str]) -> None:
    c = sandbox.client().containers.create(
        static_images["fail-sleep"], labels={sandbox.LABEL_MANAGED: "true", **LABELS,
                                             sandbox.LABEL_STARTED: "0"})
    c.start()
    assert sandbox.remove_containers_older_than(3600) >= 1
    _no_leftovers()
