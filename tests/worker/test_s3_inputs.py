"""Inputs read from S3 (moto's server) and provisioned for a container: the uncompressed copy
of a compressed input is made once per content (whatever process, whenever its blob was last
used) and lives inside the object cache, under its bound."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from backend import object_cache, storage
from backend.config import settings
from backend.storage import data_storage
from tests.s3_server import S3Server, use_s3
from worker.provision import CaseInput, provision_inputs

pytest.importorskip("moto.server")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    monkeypatch.setattr(settings, "data_dir", tmp_path / "host")
    try:
        use_s3(monkeypatch, server)
        yield server
    finally:
        server.stop()
        storage.clear_caches()


def _compressed_mha(path: Path, seed: int) -> None:
    arr = np.random.default_rng(seed).integers(0, 50, (8, 32, 32)).astype(np.int16)
    image: Any = sitk.GetImageFromArray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def test_uncompressed_copies_are_made_once_and_bounded(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {}
    for i in range(3):
        src = tmp_path / "src" / f"case{i}" / "mri.mha"
        _compressed_mha(src, seed=i)
        keys[i] = f"inputs/ds/v1/case{i}/mri.mha"
        data_storage().put_file(src, keys[i])
    derived = object_cache.cache().root / object_cache.DERIVED

    def provision(i: int, run: str) -> bytes:
        with object_cache.local_file(keys[i]) as image:
            case = CaseInput(f"case{i}", "mri", "Pelvis", image, image)
            provision_inputs(tmp_path / run, [case], derived)
        return (tmp_path / run / "images" / "mri" / f"case{i}.mha").read_bytes()

    first = provision(0, "run-a")
    assert b"CompressedData = False" in first
    assert provision(0, "run-b") == first  # the blob's time changed (a hit): same copy
    assert len(list(derived.iterdir())) == 1
    # Bounded with the blobs: room for little more than one case's blob and copy.
    for run in ("run-a", "run-b"):
        for p in (tmp_path / run).rglob("*.mha"):
            p.unlink()  # runs end: their hard links go
    stats = object_cache.cache().stats()
    monkeypatch.setattr(settings, "cache_max_bytes", stats["bytes_cached"] + 1)
    provision(1, "run-c")
    provision(2, "run-d")
    assert object_cache.cache().stats()["evictions"] >= 2
    assert object_cache.cache().stats()["bytes_cached"] <= 2 * (stats["bytes_cached"] + 1)
