"""SynthRAD-style algorithm: every MR/CBCT under /input/images/<modality>/ -> sCT in HU.

Follows the SynthRAD grand-challenge algorithm template: it processes every file it finds
(so the platform can run one case or a batch per container), reads the body mask of the same
name, writes /output/images/synthetic-ct/<same file name> with the input's geometry, and a
/output/results.json listing what it wrote. Replace ``predict`` with your model; load
weights once in ``__init__`` (batch mode then loads them once for N cases).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813

INPUT = Path("/input")
OUTPUT = Path("/output")


class SynthesisAlgorithm:
    def __init__(self) -> None:
        # Load model weights here (once per container).
        self.p99_quantile = 0.99

    def predict(self, image: np.ndarray, mask: np.ndarray, region: str) -> np.ndarray:
        """Intensities normalised inside the mask, then a piecewise-linear map to HU
        (dark inside the body: air or bone, mid: fat and soft tissue, bright: fluid)."""
        inside = image[mask > 0] if mask.any() else image.ravel()
        scale = float(np.quantile(inside, self.p99_quantile)) or 1.0
        t = np.clip(image.astype(np.float32) / scale, 0.0, 1.5)
        hu = np.interp(t, [0.0, 0.15, 0.4, 0.8, 1.0, 1.5], [-800.0, 400.0, -80.0, 30.0, 50.0, 80.0])
        return np.where(mask > 0, hu, -1000.0).astype(np.float32)

    def process(self) -> int:
        region = "unknown"
        if (INPUT / "region.json").exists():
            region = json.loads((INPUT / "region.json").read_text())
        out_dir = OUTPUT / "images" / "synthetic-ct"
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for modality in ("mri", "cbct"):
            for path in sorted((INPUT / "images" / modality).glob("*.mha")):
                t0 = time.perf_counter()
                image = sitk.ReadImage(str(path))
                mask_path = INPUT / "images" / "body" / path.name
                array = sitk.GetArrayFromImage(image)
                if mask_path.exists():
                    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
                else:
                    mask = np.ones_like(array, dtype=np.uint8)
                sct = sitk.GetImageFromArray(self.predict(array, mask, region))
                sct.CopyInformation(image)  # same size, spacing, origin, direction
                sitk.WriteImage(sct, str(out_dir / path.name), useCompression=True)
                written.append({"outputs": [{"type": "metaio_image", "filename": path.name}]})
                print(f"{path.name}: {array.shape} in {time.perf_counter() - t0:.2f}s")
        (OUTPUT / "results.json").write_text(json.dumps(written))
        if not written:
            print("no input image under /input/images/{mri,cbct}", file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(SynthesisAlgorithm().process())
