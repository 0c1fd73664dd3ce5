"""What every segmenter offers, and the error a segmenter raises when it cannot run."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from evaluator.io import Volume

LabelArray = np.ndarray[Any, Any]


@runtime_checkable
class Segmenter(Protocol):
    """Turns a (synthetic) CT into an integer label map of the same shape (z, y, x)."""

    name: str

    def segment(self, ct: Volume, mask: Volume | None = None) -> LabelArray: ...


class SegmenterUnavailableError(Exception):
    """The segmenter cannot run here (weights or packages missing); says what to install or
    configure. Not the participant's fault: the organisers must fix the setup."""
