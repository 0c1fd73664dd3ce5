"""Numbers as the database and the pages hold them.

Metric values are stored so that they round-trip through JSON and PostgreSQL: a non-finite
float becomes the string "inf", "-inf" or "nan" (``evaluator.aggregation.encode_metric``), so a
perfect PSNR (+inf) stays the best value instead of turning into null.
"""

from __future__ import annotations

import math
from typing import Any

from evaluator.aggregation import decode_metric, encode_metric


def metric_value(value: object) -> float | None:
    """A stored metric value as a float: ±inf kept; NaN, None and non-numbers -> None."""
    f = decode_metric(value)
    return None if f is None or math.isnan(f) else f


def finite_or_none(value: object) -> float | None:
    """A stored value as a float if it is a finite number, else None."""
    f = metric_value(value)
    return f if f is not None and math.isfinite(f) else None


def storable(value: Any) -> Any:
    """``value`` (nested dicts/lists of metrics) with every float JSON- and PostgreSQL-safe."""
    if isinstance(value, float):
        return encode_metric(value)
    if isinstance(value, dict):
        return {str(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
