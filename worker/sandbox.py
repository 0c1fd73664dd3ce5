"""The locked-down Docker sandbox: the ONLY module that imports docker.

One call runs one algorithm container on a prepared ``/input`` directory (mounted read-only)
and an empty ``/output`` directory, under the limits of DESIGN.md §4, and always removes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Ulimit

log = logging.getLogger(__name__)

LABEL_MANAGED = "org.syntharena.managed"
LABEL_WORKER = "org.syntharena.worker"
LABEL_SUBMISSION = "org.syntharena.submission"
LABEL_CASE_RUNS = "org.syntharena.case-runs"
LABEL_STARTED = "org.syntharena.started-at"

GiB = 1024**3
MiB = 1024**2
ROOT_USERS = {"", "root", "0", "0:0", "root:root", "root:0", "0:root"}


class SandboxError(Exception):
    """The sandbox could not run the container at all (bad image, engine error)."""


@dataclass(frozen=True)
class SandboxLimits:
    time_limit_s: float
    memory_bytes: int = 8 * GiB
    cpus: float = 2.0
    pids_limit: int = 512
    shm_bytes: int = 256 * MiB
    tmp_bytes: int = 256 * MiB  # tmpfs /tmp (counts against the memory limit)
    gpu_device: str | None = None  # e.g. "0": that one GPU through a device request
    log_lines: int = 500  # per stream, the last N lines are kept
    log_bytes: int = 64 * 1024  # per stream, after the line cap
    # /output caps: no single file can grow past output_bytes (RLIMIT_FSIZE), and /output is
    # measured 4 times a second while the container runs; over either cap, it is stopped.
    # (A hard cap on the total needs data_dir/work on its own filesystem; see RELIABILITY.md.)
    output_bytes: int = 4 * GiB
    output_files: int = 1000


@dataclass
class SandboxResult:
    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    duration_s: float  # container start -> exit (the algorithm's own wall-clock time)
    stdout: str
    stderr: str
    error_message: str = ""  # empty when the container exited 0 in time
    timings: dict[str, float] = field(default_factory=dict)  # platform overhead, per step

    @property
    def ok(self) -> bool:
        return not self.error_message


@lru_cache(maxsize=1)
def client() -> docker.DockerClient:
    # Long default timeout: loading a multi-GB image tarball takes a while.
    return docker.from_env(timeout=900)


def ping() -> bool:
    try:
        return bool(client().ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


def _fmt_gb(n: int) -> str:
    gb = n / GiB
    return f"{gb:g} GB" if gb >= 1 else f"{n / MiB:g} MB"


def image_user(image_ref: str) -> str:
    try:
        image = client().images.get(image_ref)
    except docker.errors.ImageNotFound as exc:
        raise SandboxError(f"Image {image_ref} is not loaded in the Docker engine.") from exc
    return str((image.attrs.get("Config") or {}).get("User") or "")


def has_image(image_ref: str) -> bool:
    try:
        client().images.get(image_ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def load_image(tarball: Path, expected_id: str | None = None) -> str:
    """``docker load`` a (possibly gzip/xz compressed) ``docker save`` tarball, cached by id.

    Returns the image id (``sha256:…``). When ``expected_id`` is already in the engine the
    tarball is not read at all.
    """
    if expected_id and has_image(expected_id):
        return expected_id
    try:
        with tarball.open("rb") as fh:
            images = client().images.load(fh)
    except docker.errors.APIError as exc:
        raise SandboxError(f"The image tarball could not be loaded: {exc.explanation}") from exc
    except OSError as exc:
        raise SandboxError(f"The image tarball could not be read: {exc}") from exc
    if not images:
        raise SandboxError("The image tarball contains no image.")
    ids = [str(img.id) for img in images]
    if expected_id and expected_id not in ids:
        raise SandboxError(
            f"The tarball holds image {', '.join(ids)}, not the validated {expected_id}."
        )
    return expected_id or ids[0]


def _tail(raw: bytes, lines: int, max_bytes: int) -> str:
    text = raw.decode("utf-8", errors="replace")
    kept = text.splitlines()[-lines:]
    out = "\n".join(kept)
    data = out.encode("utf-8")
    if len(data) > max_bytes:
        out = "[…]\n" + data[-max_bytes:].decode("utf-8", errors="ignore")
    return out


def run_container(
    image_ref: str,
    *,
    input_dir: Path,
    output_dir: Path,
    limits: SandboxLimits,
    labels: Mapping[str, str],
    name: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 2.0,
) -> SandboxResult:
    """Run ``image_ref`` on ``input_dir`` (read-only) writing ``output_dir``; always removed.

    ``should_stop`` is polled every ``poll_s`` seconds while the container runs (cancel: the
    worker that owns the container stops it, whichever host it is on).
    """
    t0 = time.perf_counter()
    user = image_user(image_ref)
    if user.strip() in ROOT_USERS:
        raise SandboxError(
            "The image runs as root. Add a non-root USER (e.g. `USER 1000:1000`) to the "
            "Dockerfile and upload it again."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    # The container's user owns nothing on the host: let it write its (private) output dir.
    output_dir.chmod(0o777)
    device_requests = None
    if limits.gpu_device is not None:
        device_requests = [DeviceRequest(device_ids=[limits.gpu_device], capabilities=[["gpu"]])]
    all_labels = {LABEL_MANAGED: "true", LABEL_STARTED: f"{time.time():.0f}", **labels}
    kwargs: dict[str, Any] = {
        "name": name,
        "user": user,
        "detach": True,
        "network_mode": "none",
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,  # = memory: no swap
        "nano_cpus": int(limits.cpus * 1e9),
        "pids_limit": limits.pids_limit,
        "shm_size": limits.shm_bytes,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmp_bytes},mode=1777"},
        "init": True,
        "ipc_mode": "private",
        "volumes": {
            str(input_dir.resolve()): {"bind": "/input", "mode": "ro"},
            str(output_dir.resolve()): {"bind": "/output", "mode": "rw"},
        },
        "labels": all_labels,
        "device_requests": device_requests,
        # Bound what a chatty container can write to the engine's disk.
        "log_config": LogConfig(type="json-file", config={"max-size": "20m", "max-file": "1"}),
        "environment": {"NVIDIA_VISIBLE_DEVICES": limits.gpu_device or "void"},
        # No file (in /output or /tmp) can grow past the output cap, whatever the poll sees.
        "ulimits": [Ulimit(name="fsize", soft=limits.output_bytes, hard=limits.output_bytes)],
    }
    try:
        container: Container = client().containers.create(image_ref, **kwargs)
    except docker.errors.APIError as exc:
        raise SandboxError(f"The container could not be created: {exc.explanation}") from exc
    timings: dict[str, float] = {"create": time.perf_counter() - t0}
    try:
        t1 = time.perf_counter()
        try:
            container.start()
        except docker.errors.APIError as exc:
            raise SandboxError(f"The container could not start: {exc.explanation}") from exc
        t_started = time.perf_counter()
        timings["start"] = t_started - t1
        over_cap: list[str] = []

        def stop_or_over_cap() -> bool:
            message = output_over_cap(output_dir, limits)
            if message:
                over_cap.append(message)
                return True
            return bool(should_stop and should_stop())

        # Polled often: between two polls a fast writer adds (disk speed x 0.25 s) at most.
        exit_code, stopped = _wait(container, t_started + limits.time_limit_s, stop_or_over_cap,
                                   min(poll_s, 0.25))
        timed_out = exit_code is None and not stopped
        if exit_code is None:
            _kill(container)
            exit_code = _wait_exit(container)
        duration = time.perf_counter() - t_started
        t2 = time.perf_counter()
        oom, stdout, stderr = _state_and_logs(container, limits)
        timings["collect"] = time.perf_counter() - t2
    finally:
        t3 = time.perf_counter()
        _remove(container)
        timings["remove"] = time.perf_counter() - t3

    if not over_cap and not stopped:
        # A container that wrote past a cap and exited between two polls.
        late = output_over_cap(output_dir, limits)
        if late:
            over_cap.append(late)
    message = ""
    if over_cap:
        message = over_cap[0]
    elif stopped:
        message = "The run was stopped (the submission was cancelled)."
    elif timed_out:
        message = (
            f"The algorithm exceeded the time limit of {limits.time_limit_s:g} s and was "
            "stopped. Make it faster or ask the organisers about the limit."
        )
    elif oom or exit_code == 137:
        message = (
            f"The algorithm exceeded the memory limit of {_fmt_gb(limits.memory_bytes)} and was "
            "killed (exit code 137). Reduce its memory use (e.g. process the volume in patches)."
        )
    elif exit_code != 0:
        message = (
            f"The algorithm exited with code {exit_code}. See the end of its logs for the error."
        )
    return SandboxResult(
        exit_code=exit_code,
        timed_out=timed_out,
        oom_killed=oom or (exit_code == 137 and not timed_out and not stopped),
        duration_s=duration,
        stdout=stdout,
        stderr=stderr,
        error_message=message,
        timings=timings,
    )


def _state_and_logs(container: Container, limits: SandboxLimits) -> tuple[bool, str, str]:
    """(OOM killed, stdout tail, stderr tail); an engine that lost the container's state or
    logs (e.g. removed meanwhile by a cancel) yields empty logs, never an exception."""
    try:
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
    except docker.errors.APIError:
        oom = False
    logs = []
    for out, err in ((True, False), (False, True)):
        try:
            raw = container.logs(stdout=out, stderr=err, tail=limits.log_lines)
        except docker.errors.APIError as exc:
            raw = f"[the logs could not be read: {exc.explanation}]".encode()
        logs.append(_tail(raw, limits.log_lines, limits.log_bytes))
    return oom, logs[0], logs[1]


def output_over_cap(output_dir: Path, limits: SandboxLimits) -> str:
    """A message when ``output_dir`` holds more than the caps allow, else "".

    Walks without following links and stops as soon as a cap is passed, so a directory with
    millions of entries costs at most about ``output_files`` stat calls."""
    files, used = 0, 0
    stack = [output_dir]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    files += 1
                    with contextlib.suppress(OSError):
                        st = entry.stat(follow_symlinks=False)
                        used += max(st.st_size, st.st_blocks * 512)
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                    if files > limits.output_files:
                        return (f"The algorithm wrote more than {limits.output_files} files and "
                                "folders to /output and was stopped. Write one synthetic CT per "
                                "case (and results.json) only.")
                    if used > limits.output_bytes:
                        return (f"The algorithm wrote more than {_fmt_gb(limits.output_bytes)} "
                                "to /output and was stopped. Write only the synthetic CTs there.")
        except OSError:
            continue
    return ""


def _wait(
    container: Container, deadline: float, should_stop: Callable[[], bool] | None, poll_s: float
) -> tuple[int | None, bool]:
    """(exit code or None, stopped on request); None without a stop request = timed out."""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None, False
        step = min(left, poll_s) if should_stop else left
        try:
            status = container.wait(timeout=max(step, 0.01))
            return int(status.get("StatusCode", -1)), False
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            if should_stop is not None and should_stop():
                return None, True
        except docker.errors.NotFound:
            return None, True  # removed under us (a cancel or a reaper): treat as stopped


def _kill(container: Container) -> None:
    with contextlib.suppress(docker.errors.APIError):  # already exited
        container.kill()


def _wait_exit(container: Container) -> int | None:
    try:
        return int(container.wait(timeout=30).get("StatusCode", -1))
    except (requests.exceptions.RequestException, docker.errors.APIError):
        return None


def _remove(container: Container) -> None:
    """Force-remove; transient engine errors (e.g. overlay "device busy") are retried, and a
    container that still cannot be removed is left to the reaper rather than failing the run."""
    for attempt in range(4):
        try:
            container.remove(force=True, v=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if "already in progress" in str(exc):
                return
            if attempt == 3:
                log.warning("container %s not removed (reaper will): %s", container.id, exc)
                return
            time.sleep(0.5 * (attempt + 1))


def _managed(filters: Mapping[str, str]) -> list[dict[str, Any]]:
    """This platform's containers as the engine lists them (id, labels, state), without a
    per-container inspect that would race with containers being removed meanwhile."""
    labels = [f"{LABEL_MANAGED}=true"] + [f"{k}={v}" for k, v in filters.items()]
    rows: list[dict[str, Any]] = client().api.containers(all=True, filters={"label": labels})
    return rows


def _remove_id(container_id: str) -> None:
    _remove(client().containers.prepare_model({"Id": container_id}))


def remove_containers(**label_filters: str) -> int:
    """Kill and remove this platform's containers matching the labels; returns how many.

    Used for cancel (by submission), on worker start (this worker's leftovers) and by the
    periodic reaper (containers older than any limit). Pass a filter: without one it removes
    every SynthArena container on the engine, other workers' running ones included.
    """
    n = 0
    for row in _managed(label_filters):
        _remove_id(row["Id"])
        n += 1
    return n


def remove_containers_older_than(age_s: float) -> int:
    n = 0
    now = time.time()
    for row in _managed({}):
        started = float((row.get("Labels") or {}).get(LABEL_STARTED, "0") or 0)
        if now - started > age_s:
            _remove_id(row["Id"])
            n += 1
    return n


def running_labels() -> list[dict[str, str]]:
    """Labels of this platform's live containers (the reaper's view of what is running)."""
    return [dict(row.get("Labels") or {}) for row in _managed({})
            if row.get("State") in {"created", "running"}]
