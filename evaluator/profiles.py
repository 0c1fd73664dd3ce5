"""Scoring profiles: what a phase's ``metric_profile`` computes for every case.

A profile names the image-metric definitions (SynthRAD2023 or 2025) and the geometry method:

======================  ============  ===============================================  =========
profile                 image         geometry                                         weights
======================  ============  ===============================================  =========
synthrad2023            SynthRAD2023  none (SynthRAD2023 had no geometry metrics)      no
synthrad2025            SynthRAD2025  ``dice``/``hd95``: TotalSegmentator (official)   needed
synthrad2023-phantom    SynthRAD2023  ``dice_hu``/``hd95_hu``: HU threshold            no
synthrad2025-phantom    SynthRAD2025  ``dice_hu``/``hd95_hu``: HU threshold            no
======================  ============  ===============================================  =========

A profile whose geometry needs TotalSegmentator cannot open a phase without its weights
(``backend.challenges.service``).
"""

from __future__ import annotations

from dataclasses import dataclass

from evaluator.errors import EvaluationInputError


@dataclass(frozen=True)
class ScoringProfile:
    name: str
    image: str  # evaluator.image_metrics profile
    segmenter: str | None  # evaluator.segmentation.make_segmenter name; None: no geometry
    description: str

    @property
    def needs_totalsegmentator(self) -> bool:
        return self.segmenter == "totalsegmentator"


PROFILES: dict[str, ScoringProfile] = {p.name: p for p in (
    ScoringProfile("synthrad2023", "synthrad2023", None,
                   "SynthRAD2023 image metrics (MAE, PSNR, SSIM)"),
    ScoringProfile("synthrad2025", "synthrad2025", "totalsegmentator",
                   "SynthRAD2025 image metrics (MAE, PSNR, MS-SSIM) and geometry: Dice/HD95 of "
                   "TotalSegmentator structures, as the official evaluation computes them"),
    ScoringProfile("synthrad2023-phantom", "synthrad2023", "threshold",
                   "SynthRAD2023 image metrics; phantom geometry (HU-threshold Dice/HD95)"),
    ScoringProfile("synthrad2025-phantom", "synthrad2025", "threshold",
                   "SynthRAD2025 image metrics; phantom geometry (HU-threshold Dice/HD95)"),
)}


# The ground-truth label map each segmenter's structures are compared with, by file stem:
# ``labels`` is the platform's phantom map (air / soft tissue / bone, the HU-threshold
# segmenter's classes); ``segmentation`` is SynthRAD2025's (TotalSegmentator ids). A map of
# the other kind would compare unrelated label ids, so it is never used.
LABEL_MAP_STEMS = {"threshold": "labels", "totalsegmentator": "segmentation"}


def label_map_stem(segmenter: str | None) -> str | None:
    """The file stem of the ground-truth label map ``segmenter`` needs (None: no geometry)."""
    return LABEL_MAP_STEMS.get(segmenter or "")


def profile(name: str) -> ScoringProfile:
    """The profile called ``name``; EvaluationInputError lists the known ones."""
    found = PROFILES.get(name)
    if found is None:
        raise EvaluationInputError(
            f"unknown scoring profile {name!r} (expected one of {', '.join(PROFILES)})")
    return found
