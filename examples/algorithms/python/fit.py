"""Fits the baseline's lookup tables on training phantoms (run on the host at image build time).

    python fit.py OUT.json [--cases 4] [--seed 90210]

Generates ``--cases`` phantom cases per region and task with ``evaluator.phantoms`` (seeds
far from the ones the demo and tests evaluate on, so nothing is fitted on a test case), and
writes one table per (modality, region) plus one pooled per modality (``mri/*``) for regions
it has not seen. Needs the SynthArena project on the Python path (``evaluator``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import features, fit_table, table_key

INPUT_STEMS = {"mr": "mri", "mri": "mri", "cbct": "cbct"}  # file stem -> /input modality


def tasks() -> list[str]:
    """The tasks the installed phantom generator offers (CBCT once it has a ``task``)."""
    from evaluator.phantoms import generate_dataset

    return ["mri", "cbct"] if "task" in inspect.signature(generate_dataset).parameters \
        else ["mri"]


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    img: Any = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), tuple(img.GetSpacing())


def samples(case_dir: Path) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray]:
    """(modality, region, normalised intensity, depth, CT HU) of the voxels inside the mask."""
    stem = next(s for s in INPUT_STEMS if (case_dir / f"{s}.mha").is_file())
    image, spacing = _read(case_dir / f"{stem}.mha")
    mask = _read(case_dir / "mask.mha")[0] > 0
    ct = _read(case_dir / "ct.mha")[0].astype(np.float32)
    region = str(json.loads((case_dir / "region.json").read_text()))
    norm, depth = features(image, mask, spacing)
    return INPUT_STEMS[stem], region, norm[mask], depth[mask], ct[mask]


def fit(cases: int, seed: int, size: str) -> dict[str, Any]:
    from evaluator.phantoms import REGIONS, generate_dataset

    pooled: dict[str, list[tuple[np.ndarray, ...]]] = {}
    tables: dict[str, list[list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="syntharena-fit-") as tmp:
        for task in tasks():
            for anatomy in REGIONS:
                t0 = time.perf_counter()
                extra = {"task": task} if task != "mri" else {}
                dirs = generate_dataset(Path(tmp) / task / anatomy, anatomy, cases, seed=seed,
                                        size=size, **extra)
                per_case = [samples(d) for d in dirs]
                modality, region = per_case[0][0], per_case[0][1]
                parts = [tuple(p[2:]) for p in per_case]
                tables[table_key(modality, region)] = fit_table(
                    *(np.concatenate([p[k] for p in parts]) for k in range(3)))
                pooled.setdefault(modality, []).extend(parts)
                print(f"[fit] {table_key(modality, region)}: {cases} cases "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
    for modality, parts in pooled.items():
        tables[f"{modality}/*"] = fit_table(
            *(np.concatenate([p[k] for p in parts]) for k in range(3)))
    return {"kind": "intensity-depth lookup table", "cases_per_region": cases, "seed": seed,
            "size": size, "tables": tables}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--seed", type=int, default=90210)
    ap.add_argument("--size", default="small")
    args = ap.parse_args()
    model = fit(args.cases, args.seed, args.size)
    args.out.write_text(json.dumps(model, separators=(",", ":")))
    print(f"[fit] {len(model['tables'])} tables -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
