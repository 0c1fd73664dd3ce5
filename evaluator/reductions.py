"""Sums that do not depend on torch's thread count, and per-phase wall-clock timing.

Used by :mod:`evaluator.image_metrics`. torch's CPU reductions split a large tensor between
intra-op threads and add the partial sums afterwards, and ``torch.dot`` goes to a threaded
BLAS, so the last bits of a sum change with ``torch.set_num_threads``. A leaderboard must
not: :class:`Total` reduces each tensor with numpy (single-threaded pairwise summation, an
order fixed by the tensor's shape alone) and adds the per-tensor sums with ``math.fsum``
(correctly rounded, so their grouping cannot matter either).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from evaluator.aggregation import exact_sum


class Total:
    """Running sum of the elements of float64 tensors (one tensor per image plane).

    Bit-identical for the same inputs whatever torch's CPU thread count. On CUDA the partial
    sums stay on the device (a host synchronisation per plane would cost more than the
    plane); determinism across thread counts is a CPU property only.
    """

    def __init__(self, device: torch.device) -> None:
        self._parts: list[float] | None = [] if device.type == "cpu" else None
        self._device_total = (
            None if self._parts is not None
            else torch.zeros((), dtype=torch.float64, device=device)
        )

    def add(self, t: torch.Tensor) -> None:
        if self._device_total is not None:
            self._device_total += t.sum()
        else:
            self.add_part(self.part(t))

    @staticmethod
    def part(t: torch.Tensor) -> float:
        """The sum of a CPU tensor's elements exactly as :meth:`add` adds it."""
        return float(np.add.reduce(t.numpy(), axis=None))

    def add_part(self, value: float) -> None:
        """Adds a sum from :meth:`part` (CPU only)."""
        assert self._parts is not None
        self._parts.append(value)

    def value(self) -> float:
        if self._device_total is not None:
            return float(self._device_total)
        assert self._parts is not None
        return exact_sum(self._parts)


class PhaseClock:
    """Wall-clock seconds per phase: ``lap(name)`` books the time since the previous lap.

    With ``into=None`` it does nothing (the default: metrics are not slowed by their own
    profiling). CUDA kernels run asynchronously, so the split is only meaningful on the CPU.
    """

    def __init__(self, into: dict[str, float] | None) -> None:
        self._into = into
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self._into is None:
            return
        now = time.perf_counter()
        self._into[phase] = self._into.get(phase, 0.0) + (now - self._last)
        self._last = now
