"""Build small `docker save`-style tarballs for tests."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def layer_bytes(payload: bytes = b"hello") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        _add(t, "app/run.sh", payload)
    return buf.getvalue()


def make_image_tar(
    path: Path,
    *,
    user: str = "1000",
    arch: str = "amd64",
    os_name: str = "linux",
    images: int = 1,
    compression: str = "",
    bad_digest: bool = False,
    drop_layer: bool = False,
    extra: list[tarfile.TarInfo] | None = None,
    payload: bytes = b"hello",
) -> Path:
    layer = layer_bytes(payload)
    layer_id = hashlib.sha256(layer).hexdigest()
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "config": {"User": user, "Cmd": ["/app/run.sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
    }
    config_bytes = json.dumps(config).encode()
    digest = hashlib.sha256(config_bytes).hexdigest()
    if bad_digest:
        config_bytes = config_bytes.replace(b"\"Cmd\"", b"\"CMD\"")
    entry = {"Config": f"{digest}.json", "RepoTags": ["algo:1"],
             "Layers": [f"{layer_id}/layer.tar"]}
    mode = {"": "w", "gz": "w:gz", "xz": "w:xz"}[compression]
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        if not drop_layer:
            _add(tar, f"{layer_id}/layer.tar", layer)
        _add(tar, f"{digest}.json", config_bytes)
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        _add(tar, "manifest.json", json.dumps([entry] * images).encode())
    return path
