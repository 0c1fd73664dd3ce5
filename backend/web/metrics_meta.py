"""Labels, units and directions of metrics for display (from ``evaluator.metrics`` when it is
importable, with a fallback so pages render even without the evaluator)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricMeta:
    name: str
    label: str
    unit: str
    higher_is_better: bool


_FALLBACK: dict[str, tuple[str, str, bool]] = {
    "mae": ("MAE", "HU", False),
    "psnr": ("PSNR", "dB", True),
    "ssim": ("SSIM", "", True),
    "ms_ssim": ("MS-SSIM", "", True),
    "dice": ("Dice", "", True),
    "hd95": ("HD95", "mm", False),
    "dose_mae": ("Dose MAE", "%", False),
    "dvh": ("DVH error", "%", False),
    "gamma_pass_rate": ("Gamma pass rate", "%", True),
}


def metric_meta(name: str, higher_is_better: bool | None = None) -> MetricMeta:
    try:
        from evaluator.metrics import METRICS
    except ImportError:
        METRICS = {}  # noqa: N806 - mirrors the evaluator's constant
    spec = METRICS.get(name)
    if spec is not None:
        label = str(getattr(spec, "label", name) or name)
        unit = str(getattr(spec, "unit", "") or "")
        hib = bool(getattr(spec, "higher_is_better", False))
    else:
        label, unit, hib = _FALLBACK.get(name, (name.replace("_", " "), "", False))
    if higher_is_better is not None:
        hib = higher_is_better
    return MetricMeta(name, label, unit, hib)
