"""Every metric the platform can report, with its unit and direction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

# Per-structure segmentation metrics are reported as ``dice_<structure>``/``hd95_<structure>``
# (the phantom profile's as ``dice_hu_<structure>``/``hd95_hu_<structure>``).
PER_STRUCTURE = ("dice", "hd95")
# Geometry families: the name says which segmenter produced the value (the label says it too).
GEOMETRY_FAMILIES = ("dice_hu", "hd95_hu", "dice", "hd95")  # longest prefix first


@dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    unit: str
    higher_is_better: bool
    description: str = ""
    # SynthRAD2025's ranking groups (each weighted equally by ``grouped_normalized_sum``).
    group: str = ""


IMAGE, GEOMETRY, PHOTON, PROTON = "image similarity", "geometry", "photon dose", "proton dose"


def _specs(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {s.name: replace(s, group=_group_of(s.name)) for s in specs}


def _group_of(name: str) -> str:
    if name.endswith("_photon"):
        return PHOTON
    if name.endswith("_proton"):
        return PROTON
    return GEOMETRY if name in GEOMETRY_FAMILIES else IMAGE


METRICS: dict[str, MetricSpec] = _specs(
    MetricSpec("mae", "MAE", "HU", False, "Mean absolute error inside the body mask"),
    MetricSpec("psnr", "PSNR", "dB", True, "Peak signal-to-noise ratio (population range)"),
    MetricSpec("ssim", "SSIM", "", True, "Masked 3-D SSIM (SynthRAD2023)"),
    MetricSpec("ms_ssim", "MS-SSIM", "", True, "Masked multi-scale SSIM (SynthRAD2025)"),
    MetricSpec("dice", "Dice (TotalSegmentator)", "", True,
               "SynthRAD2025 geometry: mean Dice over the region's structures, TotalSegmentator "
               "'total' 3 mm on the sCT vs the ground-truth segmentation"),
    MetricSpec("hd95", "HD95 (TotalSegmentator)", "mm", False,
               "SynthRAD2025 geometry: mean 95th-percentile Hausdorff distance over the "
               "region's structures found on the sCT, TotalSegmentator 'total' 3 mm"),
    MetricSpec("dice_hu", "Dice (HU threshold)", "", True,
               "Phantom geometry: mean Dice over air / soft tissue / bone by HU thresholds"),
    MetricSpec("hd95_hu", "HD95 (HU threshold)", "mm", False,
               "Phantom geometry: mean HD95 over air / soft tissue / bone by HU thresholds"),
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


def spec_for(name: str) -> MetricSpec | None:
    """The spec of ``name``, including per-structure names such as ``dice_bone``."""
    if name in METRICS:
        return METRICS[name]
    for base in GEOMETRY_FAMILIES:
        prefix = base + "_"
        if name.startswith(prefix) and len(name) > len(prefix):
            parent = METRICS[base]
            structure = name[len(prefix):].replace("_", " ")
            # "Dice (HU threshold: bone)"; plain dice_<structure> (no profile writes these any
            # more) says no segmenter rather than claim TotalSegmentator's.
            label = (f"{parent.label[:-1]}: {structure})" if base in ("dice_hu", "hd95_hu")
                     else f"{parent.label.split(' (')[0]} ({structure})")
            return MetricSpec(name, label, parent.unit,
                              parent.higher_is_better, f"{parent.label} of the {structure} label",
                              parent.group)
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


class DirectionError(ValueError):
    """A declared direction contradicts the registry, or a custom metric declares none."""


def resolve_direction(name: str, declared: bool | None) -> bool:
    """``higher_is_better`` of ``name``: the registry's for a known metric, else ``declared``.

    A known metric cannot be inverted (a declared direction must agree with the registry);
    a metric the registry does not know must declare its direction.
    """
    spec = spec_for(name)
    if spec is None:
        if declared is None:
            raise DirectionError(
                f"'{name}' is not a known metric: declare whether higher or lower is better.")
        return declared
    if declared is not None and declared != spec.higher_is_better:
        word = "higher" if spec.higher_is_better else "lower"
        raise DirectionError(
            f"{spec.label} ('{name}') is a metric where {word} is better; its direction comes "
            "from the evaluator's metric registry and cannot be inverted. Leave it out or "
            f"declare it '{word}'.")
    return spec.higher_is_better


def group_of(name: str) -> str | None:
    """The registry's ranking group of ``name`` (None for a metric it does not know)."""
    spec = spec_for(name)
    return spec.group if spec is not None else None
