"""The locked-down Docker sandbox: the ONLY module that imports docker.

One call runs one algorithm container on a prepared ``/input`` directory (mounted read-only)
and an empty ``/output`` directory, under the limits of DESIGN.md §4, and always removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from backend.images.users import Resolved, UserError, needs_files, refuse_root, resolve_user

log = logging.getLogger(__name__)

LABEL_MANAGED = "org.syntharena.managed"
LABEL_WORKER = "org.syntharena.worker"
LABEL_SUBMISSION = "org.syntharena.submission"
LABEL_CASE_RUNS = "org.syntharena.case-runs"
LABEL_STARTED = "org.syntharena.started-at"
LABEL_INSTANCE = "org.syntharena.worker-instance"
# Labels the platform reads: an image's own label of that name never reaches a container.
RESERVED_LABELS = (LABEL_MANAGED, LABEL_WORKER, LABEL_SUBMISSION, LABEL_CASE_RUNS, LABEL_STARTED,
                   LABEL_INSTANCE)
# This process start (a forked Celery child inherits it): two workers on one engine, even under
# the same node name, never take each other's containers for their own leftovers.
INSTANCE_ID = f"{uuid.uuid4().hex[:12]}-{os.getpid()}"

GiB = 1024**3
MiB = 1024**2
FIX_ROOT = ("Add a non-root USER (e.g. `USER 1000:1000`) to the Dockerfile and upload it "
            "again.")
# Image VOLUMEs get a tmpfs of the /tmp size instead of a volume on the host's disk; these
# paths cannot be covered that way, so an image declaring one of them is refused.
NO_VOLUME_UNDER = ("/input", "/output", "/proc", "/sys", "/dev")
MAX_IMAGE_VOLUMES = 16


class SandboxError(Exception):
    """The sandbox could not run the container at all (bad image, engine error)."""


class EngineError(SandboxError):
    """The Docker engine could not be reached, or restarted or stopped answering while the
    container ran (its exit is then not the algorithm's doing): an infrastructure fault that
    the caller retries, not a verdict on the algorithm."""


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
    # Whether the participant sees the run's logs (the phase's show_case_logs): messages then
    # point at them; otherwise they say how to find the error without them.
    logs_shown: bool = False
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
def _client() -> docker.DockerClient:
    # Long default timeout: loading a multi-GB image tarball takes a while.
    return docker.from_env(timeout=900)


def _create_failed(exc: docker.errors.APIError) -> SandboxError:
    """Why the engine refused to create a container, as the submission shows it."""
    if "bind source path does not exist" in str(exc.explanation):
        return SandboxError(
            f"The Docker engine could not mount the run's folders ({exc.explanation}). "
            "This is not a fault of the algorithm: the organisers need to check the "
            "worker's SYNTHARENA_HOST_WORK_DIR (the host path of its work directory) and "
            "re-evaluate.")
    return SandboxError(f"The container could not be created: {exc.explanation}")


def client() -> docker.DockerClient:
    try:
        return _client()
    except docker.errors.DockerException as exc:  # the engine was down when first asked
        if isinstance(exc, docker.errors.APIError):
            raise
        raise EngineError(f"The Docker engine could not be reached "
                          f"({_reason(exc.__cause__ or exc)}).") from exc


def _is_read_timeout(exc: BaseException) -> bool:
    """docker-py reports a read time-out on a unix socket as a ConnectionError."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    return any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in exc.args) \
        or "Read timed out" in str(exc)


def _lost(exc: BaseException) -> bool:
    """The connection to the engine failed (refused, reset, socket gone), not a time-out."""
    return isinstance(exc, requests.exceptions.ConnectionError
                      | requests.exceptions.ChunkedEncodingError) and not _is_read_timeout(exc)


@contextlib.contextmanager
def _engine(doing: str) -> Iterator[None]:
    """Turn a lost connection to the engine into an EngineError that says what was going on."""
    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        if not _lost(exc):
            raise
        raise EngineError(f"The Docker engine could not be reached while {doing} "
                          f"({_reason(exc)}).") from exc


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection error, e.g. 'Connection refused'."""
    for arg in exc.args:
        if isinstance(arg, BaseException):
            return _reason(arg)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def ping() -> bool:
    try:
        return bool(client().ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException, EngineError):
        return False


def engine_answers_now() -> bool:
    """Ping over a new connection. A daemon that is shutting down closes its socket at once but
    still serves the connections already open, so the pooled client would not notice."""
    try:
        fresh = docker.from_env(version=client().api.api_version, timeout=5)
    except (docker.errors.DockerException, EngineError):
        return False
    try:
        return bool(fresh.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    finally:
        fresh.close()


def wait_for_engine(timeout_s: float, poll_s: float = 1.0) -> bool:
    """Until the engine answers (True) or ``timeout_s`` passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not engine_answers_now():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def _fmt_gb(n: int) -> str:
    gb = n / GiB
    return f"{gb:g} GB" if gb >= 1 else f"{n / MiB:g} MB"


def _image_attrs(image_ref: str) -> dict[str, Any]:
    try:
        with _engine("inspecting the image"):
            attrs: dict[str, Any] = client().api.inspect_image(image_ref)
    except docker.errors.ImageNotFound as exc:
        raise SandboxError(f"Image {image_ref} is not loaded in the Docker engine.") from exc
    except docker.errors.APIError as exc:
        raise SandboxError(f"The image could not be inspected: {exc.explanation}") from exc
    return attrs


def has_image(image_ref: str) -> bool:
    try:
        with _engine("looking up the image"):
            client().images.get(image_ref)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError:
        return False  # e.g. a reference this engine cannot parse: not loaded here
    return True


def image_identities(attrs: Mapping[str, Any]) -> set[str]:
    """The digests that name a loaded image on this engine. The classic image store's Id is
    the config digest; the containerd image store (Docker Engine >= 29 by default) gives the
    manifest or index digest as Id (and in Descriptor)."""
    ids = {str(attrs.get("Id") or "")}
    ids.add(str((attrs.get("Descriptor") or {}).get("digest") or ""))
    ids.discard("")
    return ids


def _tarball_config(tarball: Path, max_json: int = 16 * MiB) -> tuple[str, list[str]]:
    """(config digest, layer diff_ids) of a ``docker save`` tarball, read in one stream."""
    small: dict[str, bytes] = {}
    budget = max_json
    try:
        with tarfile.open(tarball, "r|*") as tar:
            for m in tar:
                if m.isfile() and 0 < m.size <= min(budget, MiB):
                    f = tar.extractfile(m)
                    data = f.read() if f is not None else b""
                    if data[:1] in (b"{", b"["):
                        small[posixpath.normpath(m.name)] = data
                        budget -= m.size
        manifest = json.loads(small["manifest.json"])
        name = posixpath.normpath(manifest[0]["Config"])
        config = json.loads(small[name])
        return ("sha256:" + hashlib.sha256(small[name]).hexdigest(),
                [str(d) for d in config["rootfs"]["diff_ids"]])
    except (tarfile.TarError, OSError, EOFError, ValueError, KeyError, IndexError,
            TypeError) as exc:
        raise SandboxError(f"The image tarball is not a readable `docker save` archive "
                           f"({exc!r}).") from exc


def _same_image(tarball: Path, expected_id: str, attrs: Mapping[str, Any]) -> bool:
    """Whether the image the engine loaded from ``tarball`` is the validated ``expected_id``
    (a config digest from the upload, or this engine's own id from an earlier load)."""
    if expected_id in image_identities(attrs):
        return True
    # The containerd store names the image by a manifest digest the upload never saw: the
    # tarball's own config must be the validated one, and the engine must hold its layers.
    config_digest, diff_ids = _tarball_config(tarball)
    return config_digest == expected_id and \
        list((attrs.get("RootFS") or {}).get("Layers") or []) == diff_ids


def _load_error(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:300]
    if "max depth exceeded" in text:
        return ("The Docker engine refused the image: it has too many layers (at most 125). "
                "Combine RUN/COPY lines or use a multi-stage build, then upload it again.")
    return (f"The Docker engine could not load the image ({text}). The archive is not a "
            "loadable `docker save` archive; rebuild the image and create it with "
            "`docker save IMAGE:TAG | gzip > image.tar.gz`.")


def load_image(tarball: Path, expected_id: str | None = None) -> str:
    """``docker load`` a (possibly gzip/xz compressed) ``docker save`` tarball, cached by id.

    Returns the engine's id of the image (pass it back as ``expected_id`` and to
    ``run_container``). When ``expected_id`` is already in the engine the tarball is not read
    at all. Every failure is a SandboxError that says what was wrong (an archive the engine
    cannot load is the participant's) or an EngineError (the engine could not be reached).
    """
    if expected_id and has_image(expected_id):
        return expected_id
    try:
        with tarball.open("rb") as fh, _engine("loading the image"):
            images = client().images.load(fh)
    except docker.errors.DockerException as exc:  # APIError, ImageLoadError, ...
        raise SandboxError(_load_error(exc)) from exc
    except requests.exceptions.RequestException as exc:  # a time-out, a cut stream
        raise EngineError(f"The Docker engine did not finish loading the image "
                          f"({_reason(exc)}).") from exc
    except OSError as exc:
        raise SandboxError(f"The image tarball could not be read: {exc}") from exc
    if not images:
        raise SandboxError("The image tarball contains no image. Create it with "
                           "`docker save IMAGE:TAG | gzip > image.tar.gz`.")
    loaded = [img.attrs for img in images]
    if expected_id and not any(_same_image(tarball, expected_id, a) for a in loaded):
        ids = ", ".join(str(a.get("Id")) for a in loaded)
        raise SandboxError(f"The tarball holds image {ids}, not the validated {expected_id}.")
    return str(loaded[0]["Id"])


def _overrides(attrs: Mapping[str, Any], limits: SandboxLimits) -> dict[str, str]:
    """tmpfs mounts (path -> options) over the image's VOLUMEs, which the engine would
    otherwise back with writable volumes on the host's disk (no size cap). Their pages count
    against the memory limit, like /tmp's."""
    volumes = sorted(str(v) for v in ((attrs.get("Config") or {}).get("Volumes") or {}))
    if len(volumes) > MAX_IMAGE_VOLUMES:
        raise SandboxError(f"The image declares {len(volumes)} VOLUMEs; remove the VOLUME "
                           "lines from the Dockerfile (write to /output and /tmp only).")
    tmpfs: dict[str, str] = {}
    for raw in volumes:
        path = posixpath.normpath("/" + raw.lstrip("/"))  # normpath keeps a leading "//"
        if path in ("/tmp", "/dev/shm"):
            continue  # already a capped tmpfs
        if path == "/" or any(path == p or path.startswith(p + "/") for p in NO_VOLUME_UNDER):
            raise SandboxError(f"The image declares VOLUME {raw}, which the sandbox cannot "
                               "allow. Remove the VOLUME line from the Dockerfile (write to "
                               "/output and /tmp only) and upload the image again.")
        tmpfs[path] = f"rw,nosuid,nodev,size={limits.tmp_bytes},mode=1777"
    return tmpfs


_run_as_cache: dict[str, Resolved] = {}


def _read_file(container: Container, path: str, limit: int = MiB) -> str | None:
    """A file of a created (never started) container, links followed inside its root
    filesystem as the engine would; None when absent or not a readable plain file."""
    for _ in range(8):
        try:
            with _engine("reading the image's files"):
                chunks, _ = container.get_archive(path)
                data = b""
                for chunk in chunks:
                    data += chunk
                    if len(data) > limit + 64 * 1024:
                        return None
        except docker.errors.APIError:
            return None  # absent (404) or not readable
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            if member is None:
                return None
            if member.issym():
                path = posixpath.normpath(posixpath.join(posixpath.dirname(path),
                                                         member.linkname))
                continue
            f = tar.extractfile(member) if member.isfile() else None
            return f.read(limit).decode("utf-8", "replace") if f is not None else None
    return None


def run_as(image_ref: str, attrs: Mapping[str, Any] | None = None,
           tmpfs: Mapping[str, str] | None = None) -> Resolved:
    """The uid:gid the image's USER means, resolved through the image's own /etc/passwd and
    /etc/group when it names a user or group; root under any spelling, and names the engine
    could not resolve, raise SandboxError. Cached per image id (ids are content digests)."""
    attrs = attrs if attrs is not None else _image_attrs(image_ref)
    key = str(attrs.get("Id") or image_ref)
    if key in _run_as_cache:
        return _run_as_cache[key]
    spec = str((attrs.get("Config") or {}).get("User") or "")
    if not spec.strip() or spec.partition(":")[0] == "root":
        raise SandboxError(f"The image runs as root. {FIX_ROOT}")
    passwd = group = None
    if needs_files(spec):
        passwd, group = _id_files(image_ref, tmpfs)
    try:
        resolved = resolve_user(spec, passwd, group)
        refuse_root(spec, resolved, FIX_ROOT)
    except UserError as exc:
        raise SandboxError(str(exc)) from exc
    _run_as_cache[key] = resolved
    return resolved


def _id_files(image_ref: str, tmpfs: Mapping[str, str] | None) -> tuple[str | None, str | None]:
    """The image's /etc/passwd and /etc/group, read from a container that is created and
    removed, never started."""
    try:
        with _engine("creating a container to read the image's users"):
            probe: Container = client().containers.create(
                image_ref, entrypoint=["/nonexistent"], command=[], network_mode="none",
                labels={**{k: "" for k in RESERVED_LABELS}, LABEL_MANAGED: "true",
                        LABEL_STARTED: f"{time.time():.0f}", LABEL_INSTANCE: INSTANCE_ID},
                tmpfs=dict(tmpfs or {}), healthcheck={"test": ["NONE"]})
    except docker.errors.APIError as exc:
        raise _create_failed(exc) from exc
    try:
        return _read_file(probe, "/etc/passwd"), _read_file(probe, "/etc/group")
    finally:
        _remove(probe)


def _tail(raw: bytes, lines: int, max_bytes: int) -> str:
    text = raw.decode("utf-8", errors="replace")
    kept = text.splitlines()[-lines:]
    out = "\n".join(kept)
    data = out.encode("utf-8")
    if len(data) > max_bytes:
        out = "[…]\n" + data[-max_bytes:].decode("utf-8", errors="ignore")
    return out


def same_path(path: Path) -> str:
    return str(path.resolve())


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
    engine_wait_s: float = 60.0,
    to_host: Callable[[Path], str] = same_path,
) -> SandboxResult:
    """Run ``image_ref`` on ``input_dir`` (read-only) writing ``output_dir``; always removed.

    ``to_host`` maps them to the paths the engine's host knows them by (a worker that runs in
    a container sees its work directory under another path).

    ``should_stop`` is polled every ``poll_s`` seconds while the container runs (cancel: the
    worker that owns the container stops it, whichever host it is on).

    Raises ``EngineError`` when the engine restarted or stopped answering while the container
    ran and the container did not exit 0 (an engine that shuts down stops every container, so
    that exit says nothing about the algorithm); the container is still removed, waiting up to
    ``engine_wait_s`` for a restarting engine to come back.
    """
    t0 = time.perf_counter()
    attrs = _image_attrs(image_ref)
    volumes = _overrides(attrs, limits)
    # Numeric uid:gid: the engine never resolves a name (nor an image's passwd) itself.
    user = run_as(image_ref, attrs, volumes).spec
    output_dir.mkdir(parents=True, exist_ok=True)
    # The container's user owns nothing on the host: let it write its (private) output dir.
    output_dir.chmod(0o777)
    device_requests = None
    if limits.gpu_device is not None:
        device_requests = [DeviceRequest(device_ids=[limits.gpu_device], capabilities=[["gpu"]])]
    # Every reserved label is set here, so an image's LABEL of the same name never counts.
    all_labels = {**{k: "" for k in RESERVED_LABELS}, **labels, LABEL_MANAGED: "true",
                  LABEL_STARTED: f"{time.time():.0f}", LABEL_INSTANCE: INSTANCE_ID}
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
        "tmpfs": {**volumes, "/tmp": f"rw,nosuid,nodev,size={limits.tmp_bytes},mode=1777"},
        # The engine would run an image's HEALTHCHECK command inside the container on its own.
        "healthcheck": {"test": ["NONE"]},
        "stop_signal": "SIGKILL",
        "init": True,
        "ipc_mode": "private",
        # Mounts, not volumes: the engine refuses a source that does not exist on its host
        # (a wrong SYNTHARENA_HOST_WORK_DIR) instead of creating an empty folder there.
        "mounts": [
            Mount("/input", to_host(input_dir), type="bind", read_only=True),
            Mount("/output", to_host(output_dir), type="bind", read_only=False),
        ],
        "labels": all_labels,
        "device_requests": device_requests,
        # Bound what a chatty container can write to the engine's disk.
        "log_config": LogConfig(type="json-file", config={"max-size": "20m", "max-file": "1"}),
        # The NVIDIA runtime reads these from the container's environment, where an image's
        # ENV (e.g. NVIDIA_VISIBLE_DEVICES=all) would otherwise choose the devices it gets.
        "environment": {"NVIDIA_VISIBLE_DEVICES": limits.gpu_device or "void",
                        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
                        "NVIDIA_MIG_CONFIG_DEVICES": "", "NVIDIA_MIG_MONITOR_DEVICES": ""},
        # No file (in /output or /tmp) can grow past the output cap, whatever the poll sees.
        "ulimits": [Ulimit(name="fsize", soft=limits.output_bytes, hard=limits.output_bytes)],
    }
    try:
        with _engine("creating the container"):
            container: Container = client().containers.create(image_ref, **kwargs)
    except docker.errors.APIError as exc:
        raise _create_failed(exc) from exc
    timings: dict[str, float] = {"create": time.perf_counter() - t0}
    engine = _EngineWatch(engine_wait_s)
    try:
        t1 = time.perf_counter()
        try:
            with _engine("starting the container"):
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
                                   min(poll_s, 0.25), engine)
        timed_out = exit_code is None and not stopped
        if exit_code is None:
            _kill(container, engine)
            exit_code = _wait_exit(container, engine)
        elif exit_code != 0 and not engine.lost and not engine_answers_now():
            # It exited on its own, but the engine is going down: it was stopped by the engine.
            engine.lose("the engine stopped answering as the container exited")
        duration = time.perf_counter() - t_started
        t2 = time.perf_counter()
        oom, stdout, stderr = _state_and_logs(container, limits, engine)
        timings["collect"] = time.perf_counter() - t2
    finally:
        t3 = time.perf_counter()
        _remove(container, engine_wait_s)
        timings["remove"] = time.perf_counter() - t3

    if engine.lost and exit_code != 0 and not stopped and not over_cap:
        code = "no exit code" if exit_code is None else f"exit code {exit_code}"
        raise EngineError(
            f"The Docker engine restarted or stopped answering while the container ran "
            f"({engine.lost}; the container ended with {code}, which is not the algorithm's "
            "doing)."
        )
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
        message = f"The algorithm exited with code {exit_code}. " + (
            "See the end of its logs for the error." if limits.logs_shown else
            "Its logs are not shown in this phase: run the image locally on a sample case "
            "(\"Test your image locally\" in the algorithm README) to see the error.")
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


class _EngineWatch:
    """Whether the engine was lost while a container ran (``lost`` says how), and since when
    it has not answered; past ``wait_s`` of silence the run is given up."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.lost = ""
        self.down_since: float | None = None

    def lose(self, reason: str) -> None:
        self.lost = self.lost or reason
        if self.down_since is None:
            self.down_since = time.monotonic()

    def answered(self) -> None:
        self.down_since = None

    def check(self) -> None:
        if self.down_since is not None and time.monotonic() - self.down_since > self.wait_s:
            raise EngineError(f"The Docker engine stopped answering while the container ran "
                              f"and was still unreachable after {self.wait_s:g} s "
                              f"({self.lost}).")


def _state_and_logs(container: Container, limits: SandboxLimits,
                    engine: _EngineWatch) -> tuple[bool, str, str]:
    """(OOM killed, stdout tail, stderr tail); an engine that lost the container's state or
    logs (e.g. removed meanwhile by a cancel, or the engine restarting) yields empty logs,
    never an exception."""
    try:
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
    except docker.errors.APIError:
        oom = False
    except requests.exceptions.RequestException as exc:
        engine.lose(_reason(exc))
        oom = False
    logs = []
    for out, err in ((True, False), (False, True)):
        try:
            raw = container.logs(stdout=out, stderr=err, tail=limits.log_lines)
        except docker.errors.APIError as exc:
            raw = f"[the logs could not be read: {exc.explanation}]".encode()
        except requests.exceptions.RequestException as exc:
            engine.lose(_reason(exc))
            raw = f"[the logs could not be read: the Docker engine is unreachable " \
                  f"({_reason(exc)})]".encode()
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
    container: Container, deadline: float, should_stop: Callable[[], bool] | None, poll_s: float,
    engine: _EngineWatch,
) -> tuple[int | None, bool]:
    """(exit code or None, stopped on request); None without a stop request = timed out.

    A lost engine connection is noted in ``engine`` and waited out (a restarted engine still
    knows the container; without live-restore it has stopped it) up to ``engine.wait_s``."""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return None, False
        step = min(left, poll_s) if should_stop else left
        try:
            status = container.wait(timeout=max(step, 0.01))
            engine.answered()
            return int(status.get("StatusCode", -1)), False
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
            if _lost(exc):
                engine.lose(_reason(exc))
                engine.check()
                time.sleep(min(poll_s, max(left, 0.0)))  # refused at once: do not spin
            else:
                engine.answered()
            if should_stop is not None and should_stop():
                return None, True
        except docker.errors.NotFound:
            return None, True  # removed under us (a cancel or a reaper): treat as stopped


def _kill(container: Container, engine: _EngineWatch) -> None:
    try:
        container.kill()
    except docker.errors.APIError:
        pass  # already exited
    except requests.exceptions.RequestException as exc:
        engine.lose(_reason(exc))


def _wait_exit(container: Container, engine: _EngineWatch) -> int | None:
    try:
        return int(container.wait(timeout=30).get("StatusCode", -1))
    except docker.errors.APIError:
        return None
    except requests.exceptions.RequestException as exc:
        if _lost(exc):
            engine.lose(_reason(exc))
        return None


def _remove(container: Container, engine_wait_s: float = 0.0) -> None:
    """Force-remove; transient engine errors (e.g. overlay "device busy") are retried, an
    engine that is restarting is waited for (up to ``engine_wait_s``: the container outlives
    the restart), and a container that still cannot be removed is left to the reaper rather
    than failing the run."""
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
        except requests.exceptions.RequestException as exc:
            if attempt == 3 or not wait_for_engine(engine_wait_s):
                log.warning("container %s not removed, the Docker engine is unreachable "
                            "(removed when this worker restarts): %s", container.id, exc)
                return


def _managed(filters: Mapping[str, str]) -> list[dict[str, Any]]:
    """This platform's containers as the engine lists them (id, labels, state), without a
    per-container inspect that would race with containers being removed meanwhile."""
    labels = [f"{LABEL_MANAGED}=true"] + [f"{k}={v}" for k, v in filters.items()]
    with _engine("listing containers"):
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


def remove_leftovers(worker: str, is_alive: Callable[[str], bool]) -> int:
    """Remove the containers that earlier, now dead, instances of node ``worker`` left behind
    (e.g. the worker was killed). A container of a live instance under the same node name
    (``is_alive(instance id)``), or of this process, is never touched."""
    n = 0
    for row in _managed({LABEL_WORKER: worker}):
        instance = (row.get("Labels") or {}).get(LABEL_INSTANCE, "")
        if instance == INSTANCE_ID or (instance and is_alive(instance)):
            continue
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
