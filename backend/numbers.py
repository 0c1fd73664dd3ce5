"""Numbers as the database and the pages hold them."""

from __future__ import annotations

import math
from typing import Any


def finite_or_none(value: object) -> float | None:
    """``value`` as a float if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON (PostgreSQL rejects them): store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
