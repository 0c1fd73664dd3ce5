"""Hand-made `docker save` archives for hostile-image tests (no engine, no registry): any
layers (files, whiteouts, or bytes that are not a tar at all), any image config."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

PASSWD_ROOT_ALIAS = (b"root:x:0:0:root:/root:/bin/sh\n"
                     b"algorithm:x:0:0:looks harmless:/home/algorithm:/bin/sh\n"
                     b"bob:x:1000:1000::/home/bob:/bin/sh\n")
GROUP = b"root:x:0:\nbob:x:1000:\n"


def layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_save(path: Path, layers: list[bytes], config: dict[str, Any], *,
                tag: str = "hostile/config:1") -> Path:
    """A `docker save` archive of these layers (bytes, tar or not) and container config."""
    ids = [hashlib.sha256(data).hexdigest() for data in layers]
    image = {"architecture": "amd64", "os": "linux", "config": config,
             "rootfs": {"type": "layers", "diff_ids": [f"sha256:{i}" for i in ids]}}
    raw = json.dumps(image).encode()
    digest = hashlib.sha256(raw).hexdigest()
    manifest = [{"Config": f"{digest}.json", "RepoTags": [tag],
                 "Layers": [f"{i}/layer.tar" for i in ids]}]
    with tarfile.open(path, "w") as tar:
        for i, data in zip(ids, layers, strict=True):
            _add(tar, f"{i}/layer.tar", data)
        _add(tar, f"{digest}.json", raw)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def oci_layout(path: Path) -> Path:
    """What `skopeo copy … oci-archive:` writes: an OCI layout, no manifest.json."""
    data = layer({"app/run": b"#!/bin/sh\n"})
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(tar, "index.json", b'{"schemaVersion": 2, "manifests": []}')
        _add(tar, f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data)
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def many_layers(path: Path, n: int = 200) -> Path:
    return docker_save(path, [layer({f"f{i}": str(i).encode()}) for i in range(n)],
                       {"User": "1000:1000"})


def layer_not_a_tar(path: Path) -> Path:
    return docker_save(path, [b"this layer is not a tar archive\n" * 64], {"User": "1000:1000"})


def user_image(path: Path, user: str, passwd: bytes = PASSWD_ROOT_ALIAS,
               whiteout_later: bool = False) -> Path:
    """USER ``user`` over a layer holding /etc/passwd and /etc/group (optionally deleted by a
    whiteout in a later layer, so names can no longer be resolved)."""
    layers = [layer({"etc/passwd": passwd, "etc/group": GROUP, "app/run": b"x"})]
    if whiteout_later:
        layers.append(layer({"etc/.wh.passwd": b""}))
    return docker_save(path, layers, {"User": user, "Entrypoint": ["/app/run"]})


def volume_image(path: Path, volumes: list[str]) -> Path:
    return docker_save(path, [layer({"app/run": b"x"})],
                       {"User": "1000:1000", "Volumes": {v: {} for v in volumes}})
