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


# Per-structure segmentation metrics are reported as ``dice_<structure>``/``hd95_<structure>``.
PER_STRUCTURE = ("dice", "hd95")


def spec_for(name: str) -> MetricSpec | None:
    """The spec of ``name``, including per-structure names such as ``dice_bone``."""
    if name in METRICS:
        return METRICS[name]
    for base in PER_STRUCTURE:
        prefix = base + "_"
        if name.startswith(prefix) and len(name) > len(prefix):
            parent = METRICS[base]
            structure = name[len(prefix):].replace("_", " ")
            return MetricSpec(name, f"{parent.label} ({structure})", parent.unit,
                              parent.higher_is_better, f"{parent.label} of the {structure} label")
    return None


def directions(names: Iterable[str]) -> dict[str, bool]:
    """``{name: higher_is_better}`` for known metric names (KeyError names the unknown one)."""
    out = {}
    for name in names:
        spec = spec_for(name)
        if spec is None:
            raise KeyError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
        out[name] = spec.higher_is_better
    return out
