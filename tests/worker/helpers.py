"""Helpers for worker tests: example images (built by the CI build script), phantom cases."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813

from worker import sandbox
from worker.provision import CaseInput

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "examples" / "algorithms" / "build.sh"
EXAMPLES_OUT = ROOT / "build" / "examples"


def example_tag(name: str) -> str:
    return f"syntharena-example/{name}:latest"


def ensure_example(name: str) -> str:
    """Build an example image (and tarball) with the CI build script only when missing."""
    tag = example_tag(name)
    if not sandbox.has_image(tag) or not (EXAMPLES_OUT / f"{name}.tar.gz").exists():
        subprocess.run(["bash", str(BUILD), name], check=True, cwd=ROOT)
    return tag


def write_case(root: Path, name: str, shape: tuple[int, int, int] = (48, 64, 64),
               compress: bool = True, seed: int = 0) -> CaseInput:
    """A small MR-like phantom (ellipsoid body) with mask, under root/inputs."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    c = [s / 2 for s in shape]
    r = ((z - c[0]) / (0.45 * shape[0])) ** 2 + ((y - c[1]) / (0.4 * shape[1])) ** 2 \
        + ((x - c[2]) / (0.4 * shape[2])) ** 2
    mask = (r < 1).astype(np.uint8)
    mr = (mask * (300 + 200 * (r < 0.3)) + rng.normal(0, 10, shape)).clip(0).astype(np.int16)
    img: Any = sitk.GetImageFromArray(mr)
    img.SetSpacing((1.0, 1.0, 2.5))
    img.SetOrigin((-32.0, -32.0, -60.0))
    m: Any = sitk.GetImageFromArray(mask)
    m.CopyInformation(img)
    d = root / "inputs" / name
    d.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(d / "mr.mha"), useCompression=compress)
    sitk.WriteImage(m, str(d / "mask.mha"), useCompression=compress)
    return CaseInput(name=name, modality="mri", region="brain", image_path=d / "mr.mha",
                     mask_path=d / "mask.mha")
