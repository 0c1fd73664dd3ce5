"""Segmenters for synthetic CTs and the geometry metrics computed from their output.

Two geometry methods, each under its own metric names so a leaderboard says which one
produced a column:

- ``dice``/``hd95``: SynthRAD2025's, TotalSegmentator 'total' 3 mm
  (:mod:`~evaluator.segmentation.totalseg`, :mod:`~evaluator.segmentation.official`);
- ``dice_hu``/``hd95_hu`` (and per structure): the phantom profile's HU-threshold segmenter
  (:mod:`~evaluator.segmentation.threshold`).
"""

from __future__ import annotations

from pathlib import Path

from evaluator.errors import EvaluationInputError
from evaluator.segmentation.base import LabelArray, Segmenter, SegmenterUnavailableError
from evaluator.segmentation.threshold import (
    THRESHOLD_LABELS,
    ThresholdSegmenter,
    dice,
    hd95,
    per_structure_metrics,
    segmentation_metrics,
    worst_case_hd95,
)
from evaluator.segmentation.totalseg import TotalSegmentatorSegmenter, weights_problem

SEGMENTERS = ("threshold", "totalsegmentator")


def make_segmenter(name: str, weights_dir: str | Path | None = None) -> Segmenter:
    """The segmenter called ``name``; TotalSegmentator needs ``weights_dir``."""
    if name == "threshold":
        return ThresholdSegmenter()
    if name == "totalsegmentator":
        return TotalSegmentatorSegmenter(weights_dir)
    raise EvaluationInputError(
        f"unknown segmenter {name!r} (expected one of {', '.join(SEGMENTERS)})")


__all__ = [
    "SEGMENTERS",
    "THRESHOLD_LABELS",
    "LabelArray",
    "Segmenter",
    "SegmenterUnavailableError",
    "ThresholdSegmenter",
    "TotalSegmentatorSegmenter",
    "dice",
    "hd95",
    "make_segmenter",
    "per_structure_metrics",
    "segmentation_metrics",
    "weights_problem",
    "worst_case_hd95",
]
