"""Labels, units and directions of metrics for display (from ``evaluator.metrics``)."""

from __future__ import annotations

from dataclasses import dataclass

from evaluator.metrics import spec_for


@dataclass(frozen=True)
class MetricMeta:
    name: str
    label: str
    unit: str
    higher_is_better: bool


def metric_meta(name: str, higher_is_better: bool | None = None) -> MetricMeta:
    spec = spec_for(name)
    if spec is None:  # not a platform metric (e.g. something a results.json added)
        label, unit, hib = name.replace("_", " "), "", False
    else:
        label, unit, hib = spec.label, spec.unit, spec.higher_is_better
    if higher_is_better is not None and spec is None:
        hib = higher_is_better  # only a metric the registry does not know keeps its own
    return MetricMeta(name, label, unit, hib)
