"""The sandbox against the real Docker engine: limits, failures, cleanup."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.reliability import image_tars
from tests.worker.helpers import EXAMPLES_OUT, ensure_example, write_case
from worker import sandbox
from worker.provision import OutputError, check_output, find_outputs, provision_inputs

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


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The engine's view (``docker inspect``) of every container the sandbox creates, in order:
    what the engine got, not what the sandbox meant to send."""
    from docker.models.containers import ContainerCollection

    seen: list[dict] = []
    real_create = ContainerCollection.create

    def spy(self: ContainerCollection, image: str, **kw: object):
        c = real_create(self, image, **kw)
        seen.append(self.client.api.inspect_container(c.id))
        return c

    monkeypatch.setattr(ContainerCollection, "create", spy)
    return seen


def test_static_image_maps_mr_to_hu(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, cases, out = _run(tmp_path, static_images["static-c"])
    assert res.ok, (res.error_message, res.stderr)
    assert res.exit_code == 0 and "mode=map" in res.stdout
    path = check_output(cases[0], find_outputs(out)[cases[0].name], batch=False).path
    assert path.name == "1BA000.mha"
    _no_leftovers()


def test_batch_of_cases_in_one_container(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, cases, out = _run(tmp_path, static_images["static-c"], batch=3)
    assert res.ok
    found = find_outputs(out)
    for case in cases:
        check_output(case, found.get(case.name, []), batch=True)


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
        check_output(cases[0], find_outputs(out).get(cases[0].name, []), batch=False)


def test_missing_output_is_rejected(tmp_path: Path, static_images: dict[str, str]) -> None:
    res, cases, out = _run(tmp_path, static_images["fail-no-output"])
    assert res.ok
    with pytest.raises(OutputError, match="No synthetic CT"):
        check_output(cases[0], find_outputs(out).get(cases[0].name, []), batch=False)


def test_nan_output_is_rejected(tmp_path: Path, static_images: dict[str, str]) -> None:
    _, cases, out = _run(tmp_path, static_images["fail-nan"])
    with pytest.raises(OutputError, match="non-finite"):
        check_output(cases[0], find_outputs(out).get(cases[0].name, []), batch=False)


def test_python_template_image(tmp_path: Path, python_image: str) -> None:
    res, cases, out = _run(tmp_path, python_image, batch=2, memory_bytes=1024**3)
    assert res.ok, res.stderr
    found = find_outputs(out)
    for case in cases:
        check_output(case, found.get(case.name, []), batch=True)
    assert (out / "results.json").exists()


def test_sandbox_is_locked_down(tmp_path: Path, python_image: str, created: list[dict]) -> None:
    """Inspect the container config the engine got (network, caps, ro, user, limits)."""
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    sandbox.run_container(python_image, input_dir=inp, output_dir=out,
                          limits=sandbox.SandboxLimits(time_limit_s=20, memory_bytes=512 * 1024**2,
                                                       cpus=0.5, pids_limit=64),
                          labels=LABELS)
    seen = created[-1]
    hc = seen["HostConfig"]
    assert hc["NetworkMode"] == "none"
    assert hc["Memory"] == hc["MemorySwap"] == 512 * 1024**2
    assert hc["NanoCpus"] == 500_000_000 and hc["PidsLimit"] == 64
    assert hc["CapDrop"] == ["ALL"] and "no-new-privileges" in hc["SecurityOpt"]
    assert hc["ReadonlyRootfs"] is True and "/tmp" in hc["Tmpfs"] and hc["Init"] is True
    assert seen["Config"]["User"] == "1000:1000"
    binds = {m["Target"]: (m["Type"], m.get("ReadOnly", False)) for m in hc["Mounts"]}
    assert binds == {"/input": ("bind", True), "/output": ("bind", False)}
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


# ---------------------------------------------------------------- hostile image configs (#15)


def _build(tmp_path: Path, tag: str, lines: list[str], files: dict[str, bytes]) -> str:
    """An image FROM the static example plus ``lines``, built offline by the engine."""
    import subprocess

    ctx = tmp_path / tag.replace("/", "_").replace(":", "_")
    ctx.mkdir()
    for name, data in files.items():
        (ctx / name).write_bytes(data)
    (ctx / "Dockerfile").write_text("\n".join(["FROM syntharena-example/static-c:latest",
                                               *lines]) + "\n")
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True,
                   capture_output=True)
    return tag


ID_FILES = {"passwd": image_tars.PASSWD_ROOT_ALIAS + b"odd:x:abc:1000::/:/bin/sh\n",
            "group": image_tars.GROUP}
ID_LINES = ["COPY passwd /etc/passwd", "COPY group /etc/group"]


@pytest.mark.parametrize("user", ["0", "00", "+0", "0:1000", "algorithm", "algorithm:bob",
                                  "odd"])
def test_uid0_under_any_spelling_never_runs(tmp_path: Path, static_images: dict[str, str],
                                            user: str) -> None:
    """USER spellings the engine resolves to uid 0 (numeric forms, names the image's own
    passwd maps to 0, a uid field the engine reads as 0) are refused before any start."""
    tag = _build(tmp_path, "syntharena-test/uid0:latest", [*ID_LINES, f"USER {user}"], ID_FILES)
    sandbox._run_as_cache.clear()
    with pytest.raises(sandbox.SandboxError, match="runs as root"):
        _run(tmp_path, tag)
    _no_leftovers()


def test_named_user_runs_as_its_numeric_ids(tmp_path: Path, static_images: dict[str, str],
                                            created: list[dict]) -> None:
    tag = _build(tmp_path, "syntharena-test/bob:latest", [*ID_LINES, "USER bob"], ID_FILES)
    res, _, _ = _run(tmp_path, tag)
    assert res.ok, res.error_message
    # The engine got numbers, never the name: it resolves nothing itself.
    assert created[-1]["Config"]["User"] == "1000:1000"
    ghost = _build(tmp_path, "syntharena-test/ghost:latest", [*ID_LINES, "USER ghost"],
                   ID_FILES)
    with pytest.raises(sandbox.SandboxError, match="no user 'ghost'"):
        _run(tmp_path / "g", ghost)
    _no_leftovers()


def test_image_volumes_become_capped_tmpfs(tmp_path: Path, static_images: dict[str, str],
                                           created: list[dict]) -> None:
    """A VOLUME gets no Docker volume on the host: a tmpfs of the /tmp cap covers it."""
    tag = _build(tmp_path, "syntharena-test/volume:latest",
                 ["VOLUME /data /var/cache/model", "HEALTHCHECK CMD [\"/synth\"]",
                  "LABEL org.syntharena.worker=someone-else", "ENV NVIDIA_VISIBLE_DEVICES=all"],
                 {})
    volumes_before = {v.name for v in sandbox.client().volumes.list()}
    res, _, _ = _run(tmp_path, tag, tmp_bytes=8 * 1024**2)
    assert res.ok, res.error_message
    info = created[-1]
    assert not [m for m in info["Mounts"] if m["Type"] == "volume"], info["Mounts"]
    tmpfs = info["HostConfig"]["Tmpfs"]
    assert {"/data", "/var/cache/model"} <= set(tmpfs)
    assert all(f"size={8 * 1024**2}" in tmpfs[p] for p in ("/data", "/var/cache/model"))
    assert info["Config"]["Healthcheck"]["Test"] == ["NONE"]
    assert info["Config"]["Labels"][sandbox.LABEL_WORKER] == "pytest-sandbox"
    assert "NVIDIA_VISIBLE_DEVICES=void" in info["Config"]["Env"]
    assert {v.name for v in sandbox.client().volumes.list()} <= volumes_before
    under_output = _build(tmp_path, "syntharena-test/volume-output:latest",
                          ["VOLUME /output/cache"], {})
    with pytest.raises(sandbox.SandboxError, match="VOLUME /output/cache"):
        _run(tmp_path / "o", under_output)
    _no_leftovers()


@pytest.mark.parametrize("kind", ["many_layers", "layer_not_a_tar"])
def test_unloadable_archive_is_a_sandbox_error(tmp_path: Path, docker_engine: None,
                                               kind: str) -> None:
    """What the engine cannot load ends as the participant's SandboxError with a reason
    (steps.py fails the submission with it), never an exception nobody catches."""
    tarball = getattr(image_tars, kind)(tmp_path / f"{kind}.tar")
    with pytest.raises(sandbox.SandboxError) as exc:
        sandbox.load_image(tarball)
    assert not isinstance(exc.value, sandbox.EngineError)
    words = "too many layers" if kind == "many_layers" else "could not load the image"
    assert words in str(exc.value) and "docker" in str(exc.value).lower()


def test_image_identity_on_the_containerd_store(static_images: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker Engine >= 29 (containerd image store) names a loaded image by its manifest
    digest. A newer engine cannot be installed here, so its answers are replayed: the
    recorded shape of /images/load and /images/{id}/json (Id = Descriptor.digest = manifest
    digest, RootFS.Layers = diff_ids). The mock stands for that engine only."""
    from docker.models.images import Image, ImageCollection

    tarball = EXAMPLES_OUT / "fail-crash.tar.gz"
    config_digest, diff_ids = sandbox._tarball_config(tarball)
    manifest = "sha256:" + "ab" * 32
    recorded = {"Id": manifest, "RepoTags": ["syntharena-example/fail-crash:latest"],
                "Descriptor": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": manifest, "size": 1021},
                "Config": {"User": "1000:1000"},
                "RootFS": {"Type": "layers", "Layers": diff_ids}}
    monkeypatch.setattr(ImageCollection, "load",
                        lambda self, data: [Image(attrs=recorded, client=self.client)])
    monkeypatch.setattr(sandbox, "has_image", lambda ref: False)
    # The validated config digest matches the image loaded under its manifest digest, and
    # the engine's own id is what is returned (and run).
    assert sandbox.load_image(tarball, expected_id=config_digest) == manifest
    assert sandbox.load_image(tarball, expected_id=manifest) == manifest
    with pytest.raises(sandbox.SandboxError, match="not the validated"):
        sandbox.load_image(tarball, expected_id="sha256:" + "0" * 64)
    recorded["RootFS"] = {"Type": "layers", "Layers": ["sha256:" + "1" * 64]}
    with pytest.raises(sandbox.SandboxError, match="not the validated"):
        sandbox.load_image(tarball, expected_id=config_digest)


def test_exit_message_follows_the_phase_log_setting(tmp_path: Path,
                                                    static_images: dict[str, str]) -> None:
    hidden, _, _ = _run(tmp_path / "h", static_images["fail-crash"])
    assert "exited with code 3" in hidden.error_message
    assert "see the end of its logs" not in hidden.error_message.lower()
    assert "run the image locally" in hidden.error_message
    shown, _, _ = _run(tmp_path / "s", static_images["fail-crash"], logs_shown=True)
    assert "See the end of its logs" in shown.error_message


def test_grand_challenge_style_container(tmp_path: Path, docker_engine: None) -> None:
    """A GC-style algorithm reads GC's inputs.json and writes synthetic-ct/output.mha: with
    batch size 1 that single file is the case's output."""
    tag = ensure_example("gc-style")
    res, cases, out = _run(tmp_path, tag, memory_bytes=1024**3)
    assert res.ok, res.stderr
    assert "sockets ['body', 'mri', 'region']" in res.stdout
    assert "region 'brain'" in res.stdout
    found = find_outputs(out, [cases[0].name])
    assert [p.name for p in found[cases[0].name]] == ["output.mha"]
    check_output(cases[0], found[cases[0].name], batch=False)
    # In a batch, names must match the inputs: an unnamed file is nobody's.
    assert cases[0].name not in find_outputs(out, [cases[0].name, "1BA999"])


def test_leftovers_of_a_live_instance_are_kept(static_images: dict[str, str]) -> None:
    """Two worker instances under one node name: a starting one removes the containers of a
    dead instance, never those of a live one (liveness: its heartbeat key in Redis)."""
    from worker import celery_app

    node = "pytest-twins@host"
    live, dead = "live-instance-1", "dead-instance-2"
    celery_app._redis().set(celery_app.INSTANCE_KEY + live, "1", ex=60)
    celery_app._redis().delete(celery_app.INSTANCE_KEY + dead)
    made = {}
    for instance in (live, dead):
        made[instance] = sandbox.client().containers.create(
            static_images["fail-sleep"], labels={
                sandbox.LABEL_MANAGED: "true", sandbox.LABEL_WORKER: node,
                sandbox.LABEL_INSTANCE: instance, sandbox.LABEL_STARTED: f"{time.time():.0f}"})

    class Consumer:
        hostname = node

    try:
        celery_app._reap_leftovers(Consumer())
        left = {row["Labels"][sandbox.LABEL_INSTANCE]
                for row in sandbox._managed({sandbox.LABEL_WORKER: node})}
        assert left == {live}
        assert celery_app.instance_alive(sandbox.INSTANCE_ID)  # this process beats too
        assert sandbox.INSTANCE_ID not in celery_app.twins(node)
        celery_app._redis().set(f"{celery_app.NODE_KEY}{node}:{live}", "1", ex=60)
        assert celery_app.twins(node) == [live]
    finally:
        sandbox.remove_containers(**{sandbox.LABEL_WORKER: node})
