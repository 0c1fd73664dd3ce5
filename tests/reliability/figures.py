"""Figures the reliability tests record (attacks tried/contained, faults survived, lost
submissions, latency) in build/reliability/figures.json; scripts/reliability.py prints them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIGURES = Path(os.environ.get("SYNTHARENA_RELIABILITY_FIGURES",
                              ROOT / "build" / "reliability" / "figures.json"))


def _load() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(FIGURES.read_text())
        return data
    except (OSError, ValueError):
        return {}


def record(section: str, name: str, **values: Any) -> None:
    """Record one outcome, e.g. record("attacks", "fork-bomb", contained=True, evidence=...)."""
    data = _load()
    data.setdefault(section, {})[name] = values
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    tmp = FIGURES.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    tmp.replace(FIGURES)


def reset() -> None:
    FIGURES.unlink(missing_ok=True)
