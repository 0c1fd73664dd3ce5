"""SynthRAD-style algorithm: every MR/CBCT under /input/images/<modality>/ -> sCT in HU.

The model is the baseline of :mod:`baseline`: a lookup table from (normalised intensity,
depth below the skin) to HU per modality and region, fitted on training phantoms when the
image was built (``fit.py``; ``model.json`` beside this file).

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

import baseline
import numpy as np
import SimpleITK as sitk  # noqa: N813

INPUT = Path("/input")
OUTPUT = Path("/output")
MODEL = Path(__file__).resolve().parent / "model.json"


class SynthesisAlgorithm:
    def __init__(self) -> None:
        # Load the model once per container (batch mode: once for N cases).
        self.model = json.loads(MODEL.read_text())

    def predict(self, image: np.ndarray, mask: np.ndarray, region: str, modality: str,
                spacing: tuple[float, ...]) -> np.ndarray:
        """The sCT in HU: the fitted table of the modality and region (see baseline.py)."""
        return baseline.predict(self.model, modality, region, image, mask, spacing)

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
                sct = sitk.GetImageFromArray(
                    self.predict(array, mask, region, modality, image.GetSpacing()))
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
