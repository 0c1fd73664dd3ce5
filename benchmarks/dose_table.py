"""Markdown tables from saved ``benchmarks/dose.py`` outputs (one file per case and sCT).

    .venv/bin/python benchmarks/dose_table.py docs/measurements/dose-vm-2026-11-26-s3

Prints (1) the agreement table of evaluator/dose/README.md: gamma of our CT dose vs
pyRadPlan's, recompute times, and the sCT's dose metrics from both engines on pyRadPlan's
weights ("same weights") and with each engine's own optimised plan ("own plans"); and (2),
where the run had ``--dose-grids``, the DVH metric of both engines at each dose grid.
Files are named ``<anatomy>_<size>_<perturbation>.txt``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

METRICS = ("mae_target", "dvh", "gamma")


def _metric_block(block: str, key: str, modality: str) -> tuple[str, str, str]:
    m = re.search(rf"{key}_{modality}\s+pyRadPlan\s+([\d.]+)\s+ours\s+([\d.]+)\s+rel\. diff\s+"
                  rf"([\d.]+) %", block)
    return (m.group(1), m.group(2), m.group(3)) if m else ("?", "?", "?")


@dataclass
class Row:
    gamma_ct: str = "?"
    times: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    sct_mae_hu: str = "?"
    grids: list[tuple[str, str, str, str]] = field(default_factory=list)

    def cell(self, key: str) -> str:
        ref, ours, rel = self.metrics[key]
        return f"{ours} vs {ref} ({rel} %)"


def parse(text: str, modality: str) -> Row:
    row = Row()
    m = re.search(rf"{modality} agreement on CT, ours vs pyRadPlan, gamma 2%/2mm cutoff 10%, "
                  rf"interp 10: ([\d.]+) %", text)
    row.gamma_ct = m.group(1) if m else "?"
    for who, label in (("ours", "ours"), ("ref", "pyRadPlan")):
        m = re.search(rf"{modality} {label}\s+optimise\s+([\d.]+) s \| recompute sCT\s+([\d.]+) s",
                      text)
        row.times[f"{who}_opt"], row.times[f"{who}_sct"] = (
            (m.group(1), m.group(2)) if m else ("?", "?"))
    parts = text.split(f"{modality} metrics of the sCT, each engine with its own optimised plan:")
    head = f"{modality} metrics of the sCT, both engines on pyRadPlan's weights:"
    same = parts[0].split(head)[-1]
    own = parts[1] if len(parts) > 1 else ""
    for tag, block in (("same", same), ("own", own)):
        for key in METRICS:
            row.metrics[f"{tag}_{key}"] = _metric_block(block, key, modality)
    m = re.search(r"sCT \w+ \(MAE (\d+) HU", text)
    row.sct_mae_hu = m.group(1) if m else "?"
    row.grids = re.findall(
        rf"{modality} dose grid\s+([\d.]+) mm, same weights: dvh pyRadPlan ([\d.]+) ours ([\d.]+) "
        rf"rel\. diff\s+([\d.]+) %", text)
    return row


def main(directory: str) -> None:
    rows = []
    for path in sorted(Path(directory).glob("*_*_*.txt")):
        text = path.read_text()
        for modality in ("photon", "proton"):
            rows.append((path.stem.replace("_", " "), modality, parse(text, modality)))
    print("| case | gamma 2%/2mm | sCT recompute ours / pyRadPlan | optimise ours / pyRadPlan "
          "| MAE target (same weights) | DVH (same weights) | gamma metric (same weights) "
          "| MAE target (own plans) | DVH (own plans) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, modality, r in rows:
        t = r.times
        print(f"| {name} (sCT MAE {r.sct_mae_hu} HU), {modality} | {r.gamma_ct} % "
              f"| {t['ours_sct']} s / {t['ref_sct']} s | {t['ours_opt']} s / {t['ref_opt']} s "
              f"| {r.cell('same_mae_target')} | {r.cell('same_dvh')} "
              f"| {r.cell('same_gamma')} | {r.cell('own_mae_target')} | {r.cell('own_dvh')} |")
    if any(r.grids for _, _, r in rows):
        print()
        print("| case | dose grids (mm) | DVH pyRadPlan (its own spread) | DVH ours | "
              "rel. diff per grid |")
        print("|---|---|---|---|---|")
        for name, modality, r in rows:
            if not r.grids:
                continue
            refs = [float(g[1]) for g in r.grids]
            spread = 100 * (max(refs) - min(refs)) / min(refs)
            print(f"| {name}, {modality} | {', '.join(g[0] for g in r.grids)} "
                  f"| {', '.join(g[1] for g in r.grids)} (max/min − 1: {spread:.0f} %) "
                  f"| {', '.join(g[2] for g in r.grids)} "
                  f"| {', '.join(g[3] + ' %' for g in r.grids)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/measurements/dose-vm-2026-11-26-s3")
