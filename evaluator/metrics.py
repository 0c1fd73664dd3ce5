"""Every metric the platform can report, with its unit and direction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    unit: str
    higher_is_better: bool
    description: str = ""


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {s.name: s for s in specs}


METRICS: dict[str, MetricSpec] = _specs(
    MetricSpec("mae", "MAE", "HU", False, "Mean absolute error inside the body mask"),
    MetricSpec("psnr", "PSNR", "dB", True, "Peak signal-to-noise ratio (population range)"),
    MetricSpec("ssim", "SSIM", "", True, "Masked 3-D SSIM (SynthRAD2023)"),
    MetricSpec("ms_ssim", "MS-SSIM", "", True, "Masked multi-scale SSIM (SynthRAD2025)"),
    MetricSpec("dice", "Dice", "", True, "Mean Dice over structures"),
    MetricSpec("hd95", "HD95", "mm", False, "Mean 95th-percentile Hausdorff distance"),
    MetricSpec("mae_target_photon", "Dose MAE (photon)", "fraction of Rx", False,
               "Mean absolute dose difference above 90 % of prescription, photon plan"),
    MetricSpec("dvh_photon", "DVH metric (photon)", "", False,
               "SynthRAD DVH metric, photon plan"),
    MetricSpec("gamma_photon", "Gamma pass rate (photon)", "%", True,
               "Gamma pass rate 2 %/2 mm, photon plan"),
    MetricSpec("mae_target_proton", "Dose MAE (proton)", "fraction of Rx", False,
               "Mean absolute dose difference above 90 % of prescription, proton plan"),
    MetricSpec("dvh_proton", "DVH metric (proton)", "", False,
               "SynthRAD DVH metric, proton plan"),
    MetricSpec("gamma_proton", "Gamma pass rate (proton)", "%", True,
               "Gamma pass rate 2 %/2 mm, proton plan"),
)


def directions(names: Iterable[str]) -> dict[str, bool]:
    """``{name: higher_is_better}`` for known metric names (KeyError names the unknown one)."""
    out = {}
    for name in names:
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
        out[name] = METRICS[name].higher_is_better
    return out
