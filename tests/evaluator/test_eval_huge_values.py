"""Finite values whose exact sum leaves the float range (a hostile sCT near 1e308) score as
infinitely bad; they never raise (``math.fsum`` raises OverflowError on them)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evaluator.aggregation import aggregate, exact_sum
from evaluator.image_metrics import compute_image_metrics

finite = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(finite, max_size=12))
def test_exact_sum_is_fsum_or_the_sign_of_the_exact_sum(values: list[float]) -> None:
    exact = sum((Fraction(v) for v in values), Fraction(0))
    try:
        expected = math.fsum(values)
    except OverflowError:
        got = exact_sum(values)
        if abs(exact) > Fraction(2) ** 1024 * (1 - Fraction(1, 2**54)):  # rounds past max
            assert got == (math.inf if exact > 0 else -math.inf)
        else:  # partial sums overflowed, the total did not: its value
            assert got == pytest.approx(float(exact), rel=1e-12, abs=1e-280)
    else:
        assert exact_sum(values) == expected


def test_fsum_itself_raises_on_these() -> None:
    with pytest.raises(OverflowError):
        math.fsum([1.5e308, 1.5e308])  # what exact_sum guards against
    assert exact_sum([1.5e308, 1.5e308]) == math.inf
    assert exact_sum([1.5e308, 1.5e308, -1.5e308, -1.5e308, 2.0]) == 2.0  # cancels exactly


@pytest.mark.parametrize("profile", ["synthrad2023", "synthrad2025"])
def test_an_sct_near_the_float_limit_gets_an_infinite_mae(profile: str) -> None:
    ct = np.zeros((40, 64, 64), np.float64)
    sct = np.full(ct.shape, 1e304)
    metrics = compute_image_metrics(ct, sct, np.ones(ct.shape, np.uint8), profile)
    assert metrics["mae"] == math.inf
    assert all(math.isfinite(v) for k, v in metrics.items() if k != "mae")


def test_aggregates_of_huge_values_are_infinite() -> None:
    stats = aggregate([1.5e308, 1.5e308, 1.0])
    assert stats["mean"] == math.inf and stats["std"] == math.inf
    assert stats["max"] == 1.5e308 and stats["count"] == 3
