"""/input layout (grand-challenge/SynthRAD), uncompressed inputs, no ground truth."""

from __future__ import annotations

import json
from pathlib import Path

from tests.worker.helpers import write_case
from worker.provision import provision_inputs


def test_layout_has_inputs_only_and_uncompressed(tmp_path: Path) -> None:
    cases = [write_case(tmp_path, f"1PA00{i}", shape=(8, 16, 16), seed=i) for i in range(2)]
    (tmp_path / "inputs" / "1PA000" / "ct.mha").write_text("ground truth must never leak")
    inp = tmp_path / "input"
    provision_inputs(inp, cases, tmp_path / "cache")
    files = sorted(str(p.relative_to(inp)) for p in inp.rglob("*") if p.is_file())
    assert files == ["images/body/1PA000.mha", "images/body/1PA001.mha",
                     "images/mri/1PA000.mha", "images/mri/1PA001.mha",
                     "inputs.json", "region.json"]
    assert json.loads((inp / "region.json").read_text()) == "brain"
    for f in inp.rglob("*.mha"):
        assert b"CompressedData = False" in f.read_bytes()[:1000]
        assert f.stat().st_mode & 0o444 == 0o444
    # Provisioning again (another run of the same case) reuses the cached conversion.
    provision_inputs(tmp_path / "input2", cases[:1], tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 4
