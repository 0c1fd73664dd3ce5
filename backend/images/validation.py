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
from typing import Any, Literal

MAGIC = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz"}
TAR_MODES: dict[str, Literal["r|", "r|gz", "r|xz"]] = {"none": "r|", "gzip": "r|gz", "xz": "r|xz"}
FIX_USER = (
    "Add a non-root user at the end of your Dockerfile, for example:\n"
    "    RUN groupadd -r algorithm && useradd -m --no-log-init -r -g algorithm algorithm\n"
    "    USER algorithm\n"
    "then rebuild and `docker save` the image again."
)
HOW_TO_SAVE = "Create it with `docker save IMAGE:TAG | gzip > image.tar.gz`."


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


def _check_user(config: dict[str, Any]) -> str:
    user = str((config.get("config") or {}).get("User") or "").strip()
    if not user:
        raise ImageInvalidError("The image has no USER, so it would run as root. " + FIX_USER)
    if user.split(":", 1)[0] in {"root", "0"}:
        raise ImageInvalidError(f"The image runs as root (USER {user}). " + FIX_USER)
    return user


def validate_tarball(
    path: Path, *, max_uncompressed_bytes: int, max_json_bytes: int = 16 * 1024**2
) -> ImageReport:
    """Raise ``ImageInvalidError`` with a message for the owner, or return what was found."""
    compression = detect_compression(path)
    members: dict[str, _Member] = {}
    small_json: dict[str, bytes] = {}
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
                    if m.size <= json_budget:
                        f = tar.extractfile(m)
                        first = f.read(1) if f is not None else b""
                        if f is not None and first in (b"{", b"["):
                            small_json[norm] = first + f.read()
                            json_budget -= m.size
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
    return _check_contents(members, small_json, compression, total)


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
    members: dict[str, _Member], small_json: dict[str, bytes], compression: str, total: int
) -> ImageReport:
    if "manifest.json" not in members:
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
    user = _check_user(config)
    layers = entry.get("Layers")
    if not isinstance(layers, list) or not layers:
        raise ImageInvalidError("manifest.json lists no layers. " + HOW_TO_SAVE)
    for layer in layers:
        if not isinstance(layer, str) or _resolve(members, _normalise(layer)) is None:
            raise ImageInvalidError(f"Layer {layer} listed in manifest.json is missing from "
                                    "the archive (truncated upload?).")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise ImageInvalidError("The image config and manifest.json disagree on the number of "
                                "layers: the archive is inconsistent. " + HOW_TO_SAVE)
    tags = entry.get("RepoTags") or []
    return ImageReport(
        compression=compression,
        docker_image_id=f"sha256:{digest}",
        repo_tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        user=user,
        uncompressed_bytes=total,
    )
