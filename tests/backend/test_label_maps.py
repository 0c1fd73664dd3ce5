"""The two kinds of ground-truth label maps never mix. A case folder may hold the phantoms'
3-class ``labels`` map (air / soft tissue / bone: the HU-threshold segmenter's classes) and
SynthRAD2025's ``segmentation`` (TotalSegmentator ids); the importer keeps both under their own
names, and scoring compares each segmenter with the map of its own kind (label 2 is soft tissue
in one and the right kidney in the other)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.datasets import importers
from backend.datasets.jobs import Planned, store_case
from backend.storage import groundtruth_storage
from backend.submissions.pipeline import label_map_for
from evaluator.io import write_volume
from evaluator.scoring import score_dir


def _case_folder(root: Path, name: str, maps: tuple[str, ...]) -> Path:
    folder = root / "Task2" / "TH" / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1500, (8, 12, 12)).astype(np.int16)
    for stem, arr in (("cbct", ct), ("ct", ct), ("mask", np.ones_like(ct, np.uint8))):
        write_volume(folder / f"{stem}.mha", arr)
    if "labels" in maps:
        write_volume(folder / "labels.mha", np.full(ct.shape, 2, np.uint8))
    if "segmentation" in maps:
        write_volume(folder / "segmentation.mha", np.full(ct.shape, 51, np.uint8))
    return folder


@pytest.mark.parametrize("maps", [("labels", "segmentation"), ("labels",), ("segmentation",),
                                  ()])
def test_import_keeps_each_map_and_scoring_picks_its_kind(tmp_path: Path,
                                                          maps: tuple[str, ...]) -> None:
    _case_folder(tmp_path / "src", "2THA001", maps)
    [found] = importers.find_cases(tmp_path / "src")
    assert found.region == "Thorax"
    record, _ = store_case("ds/v1", Planned(found.name, lambda _scratch: found))
    stored = groundtruth_storage().keys("groundtruth/ds/v1/2THA001/")
    names = {Path(k).name for k in stored}
    assert {f"{m}.mha" for m in maps} <= names
    # Only what the folder held: a segmentation is never stored under the phantoms' name.
    assert ("labels.mha" in names) == ("labels" in maps)
    labels_path = record["labels_path"]
    assert (labels_path is None) == (not maps)

    threshold = label_map_for(labels_path, "synthrad2025-phantom")
    totalseg = label_map_for(labels_path, "synthrad2025")
    assert threshold == ("groundtruth/ds/v1/2THA001/labels.mha" if "labels" in maps else None)
    assert totalseg == ("groundtruth/ds/v1/2THA001/segmentation.mha"
                        if "segmentation" in maps else None)
    # Profiles without geometry compare with nothing.
    assert label_map_for(labels_path, "synthrad2023") is None


def test_score_dir_compares_the_threshold_segmenter_with_the_labels_map(tmp_path: Path) -> None:
    """The CLI picks the same way: with both maps beside the CT, the HU-threshold profile
    scores against ``labels`` (its classes); given only a TotalSegmentator segmentation it
    computes no threshold geometry rather than comparing unrelated ids."""
    both = _case_folder(tmp_path / "both", "2THA001", ("labels", "segmentation"))
    only_ts = _case_folder(tmp_path / "ts", "2THA001", ("segmentation",))
    for folder in (both, only_ts):
        pred = folder.parents[2] / "pred"
        pred.mkdir()
        (pred / "2THA001.mha").write_bytes((folder / "ct.mha").read_bytes())
    scored = score_dir(both.parent, both.parents[2] / "pred", "synthrad2025-phantom")
    metrics = scored["cases"]["2THA001"]
    assert "dice_hu" in metrics and not scored["errors"]
    unscored = score_dir(only_ts.parent, only_ts.parents[2] / "pred", "synthrad2025-phantom")
    assert "dice_hu" not in unscored["cases"]["2THA001"]
