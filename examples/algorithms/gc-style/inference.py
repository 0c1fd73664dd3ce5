"""A grand-challenge-style algorithm, written the way GC's algorithm templates are.

It reads ``/input/inputs.json`` (grand-challenge's list of socket values: ``interface.slug``,
``interface.relative_path``, ``value``), loads the one image in each image socket's folder
whatever its file name, and writes ``/output/images/synthetic-ct/output.mha`` (GC's template
name, not the case name). SynthArena runs it unchanged in phases with batch size 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813

INPUT = Path("/input")
OUTPUT = Path("/output")


def load_sockets() -> dict[str, dict]:
    values = json.loads((INPUT / "inputs.json").read_text())
    return {v["interface"]["slug"]: v for v in values}


def load_image(socket: dict) -> sitk.Image:
    folder = INPUT / socket["interface"]["relative_path"]
    (path,) = sorted(folder.glob("*.mha"))  # GC puts exactly one file in an image socket
    return sitk.ReadImage(str(path))


def run() -> int:
    sockets = load_sockets()
    modality = next(s for s in ("mri", "cbct") if s in sockets)
    image = load_image(sockets[modality])
    mask = sitk.GetArrayFromImage(load_image(sockets["body"]))
    region = sockets["region"]["value"]
    print(f"gc-style: {modality} image, region {region!r}, sockets {sorted(sockets)}")
    mr = sitk.GetArrayFromImage(image).astype(np.float32)
    scale = float(np.quantile(mr[mask > 0], 0.99)) if mask.any() else 1.0
    hu = np.where(mask > 0, np.clip(mr / (scale or 1.0), 0, 1.5) * 1000 - 500, -1000)
    sct = sitk.GetImageFromArray(hu.astype(np.float32))
    sct.CopyInformation(image)
    out = OUTPUT / "images" / "synthetic-ct"
    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sct, str(out / "output.mha"), useCompression=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
