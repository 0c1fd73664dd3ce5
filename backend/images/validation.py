"""Validate a ``docker save`` tarball (plain, gzip or xz) in one streaming pass.

Nothing is extracted to disk and memory stays bounded: only small JSON members (the
manifest and image configs) are held, up to ``max_json_bytes`` in all.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from backend.images.users import UserError, refuse_root, resolve_user

MAGIC = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz"}
TAR_MODES: dict[str, Literal["r|", "r|gz", "r|xz"]] = {"none": "r|", "gzip": "r|gz", "xz": "r|xz"}
FIX_USER = (
    "Add a non-root user at the end of your Dockerfile, for example:\n"
    "    RUN groupadd -r algorithm && useradd -m --no-log-init -r -g algorithm algorithm\n"
    "    USER algorithm\n"
    "then rebuild and `docker save` the image again."
)
HOW_TO_SAVE = "Create it with `docker save IMAGE:TAG | gzip > image.tar.gz`."
HOW_FROM_OCI = (
    "The archive is an OCI image layout (oci-layout / index.json) without the manifest.json "
    "of a `docker save` archive, which is what the platform loads. Convert it with\n"
    "    skopeo copy oci-archive:image.tar docker-archive:image-docker.tar:algorithm:latest\n"
    "or load it and save it again with Docker: `docker load -i image.tar` then "
    "`docker save algorithm:latest | gzip > image.tar.gz`."
)
# The Docker engine refuses images with more layers than this ("max depth exceeded").
MAX_LAYERS = 125
# The files USER names are looked up in; kept per layer up to this size.
ID_FILES = ("etc/passwd", "etc/group")
ID_FILE_MAX = 1024**2


def human_size(n: int) -> str:
    """Bytes for people: '1.50 GB', '64 MB', '512 kB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


class ImageInvalidError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class ImageReport:
    compression: str
    docker_image_id: str
    repo_tags: list[str] = field(default_factory=list)
    user: str = ""
    runs_as: str = ""  # "uid:gid" the USER resolves to in the image
    uncompressed_bytes: int = 0


@dataclass
class _Member:
    kind: str  # file | dir | link
    size: int
    target: str | None = None


def detect_compression(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(262)
    for magic, name in MAGIC.items():
        if head.startswith(magic):
            return name
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "none"
    if head.startswith((b"BZh", b"\x28\xb5\x2f\xfd")):
        raise ImageInvalidError(
            "The file is compressed with bzip2 or zstd; use plain tar, gzip or xz. " + HOW_TO_SAVE
        )
    raise ImageInvalidError("The file is not a tar archive (plain, gzip or xz). " + HOW_TO_SAVE)


def _normalise(name: str) -> str:
    if not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise ImageInvalidError(f"Archive member {name!r} has an absolute or unsafe name.")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise ImageInvalidError(f"Archive member {name!r} escapes the archive.")
    return norm


def _link_target(member: tarfile.TarInfo, norm: str) -> str:
    link = member.linkname
    if not link or link.startswith("/"):
        raise ImageInvalidError(f"Link {member.name!r} points outside the archive ({link!r}).")
    base = posixpath.dirname(norm) if member.issym() else ""
    target = posixpath.normpath(posixpath.join(base, link))
    if target == ".." or target.startswith("../"):
        raise ImageInvalidError(f"Link {member.name!r} points outside the archive ({link!r}).")
    return target


@dataclass
class _Layer:
    """What one layer does to /etc/passwd and /etc/group: its bytes, or a reason they are
    gone or unusable ("deleted", "a link", ...); a path the layer does not touch is absent."""
    files: dict[str, bytes | str] = field(default_factory=dict)
    error: str = ""  # the layer is not a readable tar archive


class _Prefixed:
    """A stream with its first bytes (already read to sniff the format) put back."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if n < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data + (self.rest.read(n - len(data)) if len(data) < n else b"")


def _scan_layer(stream: _Prefixed, compressed: bool, budget: int, kept: list[int]) -> _Layer:
    """One pass over a layer tar; a compressed one may unpack to at most ``budget`` bytes.
    ``kept[0]``: bytes of passwd/group copies all layers may still keep (memory bound)."""
    layer = _Layer()
    unpacked = 0
    opaque = False
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as inner:  # type: ignore[call-overload]
            for m in inner:
                unpacked += max(m.size, 0)
                if compressed and unpacked > budget:
                    raise ImageInvalidError(f"A compressed layer unpacks to more than "
                                            f"{human_size(budget)}; make the image smaller.")
                name = posixpath.normpath(m.name.lstrip("/")).removeprefix("./")
                if name in ("etc", ".wh.etc"):
                    if name == ".wh.etc" or not m.isdir():
                        for path in ID_FILES:
                            layer.files[path] = "deleted" if name == ".wh.etc" else \
                                "under an /etc that is not a plain folder"
                elif name == "etc/.wh..wh..opq":
                    opaque = True
                elif name in ("etc/.wh.passwd", "etc/.wh.group"):
                    layer.files[name.replace(".wh.", "")] = "deleted"
                elif name in ID_FILES:
                    if not m.isfile():
                        layer.files[name] = "a link or special file"
                    elif m.size > min(ID_FILE_MAX, kept[0]):
                        layer.files[name] = "too large"
                    else:
                        f = inner.extractfile(m)
                        layer.files[name] = f.read() if f is not None else "unreadable"
                        kept[0] -= m.size
    except ImageInvalidError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, RuntimeError) as exc:
        return _Layer(error=str(exc) or type(exc).__name__)
    if opaque:  # an opaque /etc hides the lower layers' files, not this layer's own
        for path in ID_FILES:
            layer.files.setdefault(path, "deleted")
    return layer


def _id_files(layers: list[_Layer]) -> dict[str, str | None]:
    """/etc/passwd and /etc/group of the image (the last layer that touches one wins);
    None where absent, deleted or not a plain file."""
    out: dict[str, str | None] = {}
    for path in ID_FILES:
        out[path] = None
        for layer in reversed(layers):
            if path in layer.files:
                got = layer.files[path]
                out[path] = got.decode("utf-8", "replace") if isinstance(got, bytes) else None
                break
    return out


def _check_user(config: dict[str, Any], layers: list[_Layer]) -> str:
    """The USER resolved through the image's own passwd/group; root under any spelling (and
    names the engine could not resolve) are refused. Returns "SPEC (uid:gid)"."""
    spec = str((config.get("config") or {}).get("User") or "")
    if not spec.strip():
        raise ImageInvalidError("The image has no USER, so it would run as root. " + FIX_USER)
    if spec.partition(":")[0] == "root":  # root whether or not the image has a passwd
        raise ImageInvalidError(f"The image runs as root (USER {spec}). " + FIX_USER)
    files = _id_files(layers)
    try:
        resolved = resolve_user(spec, files["etc/passwd"], files["etc/group"])
        refuse_root(spec, resolved, FIX_USER)
    except UserError as exc:
        raise ImageInvalidError(str(exc)) from exc
    return resolved.spec


def _check_config(config: dict[str, Any]) -> None:
    """Image-config fields that would give the container something beyond the sandbox's.
    VOLUME is the one the engine acts on by itself (a writable volume on the host's disk);
    the others are neutralised when the container is created (worker/sandbox.py)."""
    volumes = (config.get("config") or {}).get("Volumes") or {}
    if volumes:
        paths = ", ".join(sorted(str(v) for v in volumes)[:5])
        raise ImageInvalidError(
            f"The image declares VOLUME {paths}. Volumes are not allowed: the container writes "
            "only to /output and /tmp. Remove the VOLUME lines from the Dockerfile; when the "
            "base image declares them (a later line cannot undo a VOLUME), use a base image "
            "without VOLUME, then rebuild and `docker save` the image again."
        )


def validate_tarball(
    path: Path, *, max_uncompressed_bytes: int, max_json_bytes: int = 16 * 1024**2
) -> ImageReport:
    """Raise ``ImageInvalidError`` with a message for the owner, or return what was found."""
    compression = detect_compression(path)
    members: dict[str, _Member] = {}
    small_json: dict[str, bytes] = {}
    layers: dict[str, _Layer] = {}
    id_budget = [4 * ID_FILE_MAX]
    json_budget = max_json_bytes
    total = 0
    try:
        with tarfile.open(path, TAR_MODES[compression]) as tar:
            for m in tar:
                norm = _normalise(m.name)
                if m.issym() or m.islnk():
                    members[norm] = _Member("link", 0, _link_target(m, norm))
                elif m.isdir():
                    members[norm] = _Member("dir", 0)
                elif m.isfile():
                    members[norm] = _Member("file", m.size)
                    total += m.size
                    if total > max_uncompressed_bytes:
                        raise ImageInvalidError(
                            f"The image is larger than {human_size(max_uncompressed_bytes)} "
                            "unpacked; make it smaller (slimmer base image, fewer layers' "
                            "leftovers)."
                        )
                    f = tar.extractfile(m)
                    head = f.read(6) if f is not None else b""
                    if f is not None and head[:1] in (b"{", b"[") and m.size <= json_budget:
                        small_json[norm] = head + f.read()
                        json_budget -= m.size
                    elif f is not None:
                        # Any other file may be a layer (its name alone does not say: docker
                        # save writes <id>/layer.tar or blobs/sha256/<digest>).
                        compressed = head.startswith(tuple(MAGIC))
                        layers[norm] = _scan_layer(_Prefixed(head, f), compressed,
                                                   max_uncompressed_bytes - total, id_budget)
                else:
                    raise ImageInvalidError(
                        f"Archive member {m.name!r} is a device, FIFO or other special file."
                    )
    except ImageInvalidError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ImageInvalidError(
            f"The archive is damaged or truncated ({exc}). " + HOW_TO_SAVE
        ) from exc
    return _check_contents(members, small_json, layers, compression, total)


def _resolve(members: dict[str, _Member], name: str) -> str | None:
    """Follow links inside the archive (bounded, so a loop cannot hang us)."""
    norm = posixpath.normpath(name)
    for _ in range(8):
        member = members.get(norm)
        if member is None:
            return None
        if member.kind != "link":
            return norm
        norm = member.target or ""
    return None


def _digest_of(name: str) -> str | None:
    base = posixpath.basename(name)
    hexpart = base.removesuffix(".json")
    if len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart):
        return hexpart
    return None


def _check_contents(
    members: dict[str, _Member], small_json: dict[str, bytes], layers: dict[str, _Layer],
    compression: str, total: int
) -> ImageReport:
    if "manifest.json" not in members:
        if "oci-layout" in members or "index.json" in members:
            raise ImageInvalidError(HOW_FROM_OCI)
        raise ImageInvalidError("manifest.json is missing: not a `docker save` archive. "
                                + HOW_TO_SAVE)
    raw = small_json.get("manifest.json")
    try:
        manifest = json.loads(raw) if raw is not None else None
    except ValueError:
        manifest = None
    if not isinstance(manifest, list):
        raise ImageInvalidError("manifest.json is not a valid docker manifest. " + HOW_TO_SAVE)
    if len(manifest) != 1:
        raise ImageInvalidError(
            f"The archive holds {len(manifest)} images; upload exactly one "
            "(`docker save ONE-IMAGE:TAG`)."
        )
    entry = manifest[0]
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise ImageInvalidError("manifest.json has no Config entry. " + HOW_TO_SAVE)
    config_name = _resolve(members, entry["Config"])
    if config_name is None:
        raise ImageInvalidError(f"The image config {entry['Config']} listed in manifest.json "
                                "is missing from the archive.")
    config_bytes = small_json.get(config_name)
    if config_bytes is None:
        raise ImageInvalidError(f"The image config {entry['Config']} is not valid JSON "
                                "or too large.")
    digest = hashlib.sha256(config_bytes).hexdigest()
    expected = _digest_of(entry["Config"])
    if expected is not None and expected != digest:
        raise ImageInvalidError("The image config does not match its digest: the archive is "
                                "inconsistent or was modified. " + HOW_TO_SAVE)
    try:
        config = json.loads(config_bytes)
    except ValueError as exc:
        raise ImageInvalidError("The image config is not valid JSON.") from exc
    if not isinstance(config, dict):
        raise ImageInvalidError("The image config is not a JSON object.")
    arch, os_name = config.get("architecture"), config.get("os")
    if arch != "amd64":
        raise ImageInvalidError(
            f"The image is built for {arch or 'an unknown architecture'}; the evaluation "
            "machines run amd64. Rebuild with `docker build --platform linux/amd64 …`."
        )
    if os_name != "linux":
        raise ImageInvalidError(f"The image is for {os_name or 'an unknown OS'}; it must be "
                                "a linux image.")
    names = entry.get("Layers")
    if not isinstance(names, list) or not names:
        raise ImageInvalidError("manifest.json lists no layers. " + HOW_TO_SAVE)
    if len(names) > MAX_LAYERS:
        raise ImageInvalidError(
            f"The image has {len(names)} layers; the Docker engine loads at most {MAX_LAYERS}. "
            "Combine RUN/COPY lines (e.g. `RUN a && b`) or use a multi-stage build that copies "
            "the result into a fresh stage, then `docker save` it again."
        )
    ordered: list[_Layer] = []
    for name in names:
        where = _resolve(members, _normalise(name)) if isinstance(name, str) else None
        if where is None:
            raise ImageInvalidError(f"Layer {name} listed in manifest.json is missing from "
                                    "the archive (truncated upload?).")
        layer = layers.get(where)
        if layer is None or layer.error:
            why = layer.error if layer is not None else "it looks like JSON"
            raise ImageInvalidError(f"Layer {name} is not a tar archive ({why}), so the Docker "
                                    "engine could not load it. " + HOW_TO_SAVE)
        ordered.append(layer)
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(names):
        raise ImageInvalidError("The image config and manifest.json disagree on the number of "
                                "layers: the archive is inconsistent. " + HOW_TO_SAVE)
    _check_config(config)
    runs_as = _check_user(config, ordered)
    tags = entry.get("RepoTags") or []
    return ImageReport(
        compression=compression,
        docker_image_id=f"sha256:{digest}",
        repo_tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        user=str(config["config"]["User"]),
        runs_as=runs_as,
        uncompressed_bytes=total,
    )
