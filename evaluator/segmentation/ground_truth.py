"""The ground-truth segmentation a synthetic CT's segmentation is compared with.

SynthRAD2025 ships one per case (``segmentation.mha``: TotalSegmentator run on the CT); the
importer stores it as the case's labels. A case without one gets TotalSegmentator's
segmentation of its CT, computed once and cached: the file name holds a hash of the CT file
and of the model, so new weights or a changed CT never reuse a stale segmentation.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from evaluator.errors import EvaluationInputError
from evaluator.io import Volume, read_volume, write_volume
from evaluator.segmentation.base import LabelArray
from evaluator.segmentation.totalseg import TotalSegmentatorSegmenter


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:32]


def reference_labels(
    ct: Volume,
    labels_path: Path | None,
    segmenter: TotalSegmentatorSegmenter,
    cache_dir: Path | None,
) -> tuple[LabelArray, str]:
    """``(labels (z, y, x), source)``: the dataset's segmentation when the case has one (on the
    CT's grid: the official code imposes the CT's geometry on it, so only the shape must
    match), else the cached TotalSegmentator segmentation of the CT (computed when missing)."""
    if labels_path is not None:
        labels = read_volume(labels_path)
        if labels.array.shape != ct.array.shape:
            raise EvaluationInputError(
                f"the ground-truth segmentation's size {labels.size} differs from the CT's "
                f"size {ct.size} ({labels_path.name}); the organisers must fix the dataset")
        return labels.array, "dataset"
    if ct.path is None or cache_dir is None:
        return segmenter.segment(ct), "computed"
    cached = cache_dir / f"{_file_hash(ct.path)}-{segmenter.fingerprint()}.mha"
    if cached.is_file():
        return read_volume(cached).array, "cached"
    labels_array = segmenter.segment(ct)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed: a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mha", dir=cache_dir)
    os.close(fd)
    try:
        write_volume(tmp, labels_array, like=ct)
        os.replace(tmp, cached)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return labels_array, "computed"
