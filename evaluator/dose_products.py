"""Compact dose products of a scored case, stored once beside its prediction for the viewer.

Per modality (photon, proton): the dose on the CT and on the sCT (Gy), their difference
(sCT − CT, % of the prescription) and the gamma pass/fail map, block-averaged to a grid of
about the dose grid's resolution (at most ``MAX_BINS`` per axis) in float16 (gamma in uint8:
exact codes, a block fails when any of its voxels fails); and the cumulative DVHs of the
target and the organs at risk on both doses with the DVH metric's points, as JSON.

Files: ``<prediction dir>/dose/<case>.npz`` (arrays ``<modality>/<kind>``) and
``<case>.json`` (grid, prescription, DVHs); in the platform's data storage, the same names
beside the prediction's key (``keys``). Numpy only: the web app reads them without the dose
engines installed.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

VERSION = 1
KINDS = ("dose_ct", "dose_sct", "dose_diff", "gamma")
GAMMA_NONE, GAMMA_PASS, GAMMA_FAIL = 0, 1, 2  # below the cutoff / gamma <= 1 / gamma > 1
MAX_BINS = 128
BIN_MM = 3.0  # about the dose grid of the engines: finer adds bytes, not information
DVH_POINTS = 101


def paths(prediction: Path, case_name: str) -> tuple[Path, Path]:
    """(arrays .npz, meta .json) of a case whose prediction is ``prediction``."""
    folder = prediction.parent / "dose"
    return folder / f"{case_name}.npz", folder / f"{case_name}.json"


def keys(prediction_key: str, case_name: str) -> tuple[str, str]:
    """(arrays, meta) storage keys of a case whose prediction is stored under
    ``prediction_key``: the layout of ``paths`` in the storage."""
    folder = posixpath.join(posixpath.dirname(prediction_key), "dose")
    return f"{folder}/{case_name}.npz", f"{folder}/{case_name}.json"


def bin_starts(n: int, spacing_mm: float) -> npt.NDArray[np.intp]:
    """First voxel of each block along an axis of ``n`` voxels (strictly increasing: blocks
    cover the whole axis, so the coarse grid spans the same field of view)."""
    m = max(1, min(n, MAX_BINS, math.ceil(n * spacing_mm / BIN_MM)))
    starts: npt.NDArray[np.intp] = np.floor(np.arange(m) * (n / m)).astype(np.intp)
    return starts


def _reduce(a: npt.NDArray[Any], starts: Sequence[npt.NDArray[np.intp]], op: np.ufunc,
            ) -> npt.NDArray[Any]:
    # The last (contiguous) axis first: 3-4x faster than the first axis first.
    for axis in reversed(range(len(starts))):
        a = op.reduceat(a, starts[axis], axis=axis)
    return a


def block_mean(a: npt.NDArray[Any], starts: Sequence[npt.NDArray[np.intp]]) -> npt.NDArray[Any]:
    total = _reduce(a.astype(np.float32, copy=False), starts, np.add)  # float16 in the end
    counts = [np.diff(np.append(s, n)) for s, n in zip(starts, a.shape, strict=True)]
    sizes = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
    mean: npt.NDArray[Any] = total / sizes
    return mean


def gamma_codes(gamma: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    codes = np.full(gamma.shape, GAMMA_NONE, np.uint8)
    valid = ~np.isnan(gamma)
    codes[valid & (gamma <= 1.0)] = GAMMA_PASS
    codes[valid & (gamma > 1.0)] = GAMMA_FAIL
    return codes


def cumulative_dvh(dose: npt.NDArray[Any], levels: npt.NDArray[Any]) -> list[float]:
    """% of the structure's voxels receiving at least each dose level."""
    values = np.sort(dose.ravel())
    at_least = values.size - np.searchsorted(values, levels, side="left")
    return [round(float(v), 3) for v in 100.0 * at_least / max(values.size, 1)]


@dataclass
class ModalityProducts:
    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]


@dataclass
class CaseProducts:
    engine: str = ""
    modalities: dict[str, ModalityProducts] = field(default_factory=dict)


def build(
    d_ct: npt.NDArray[Any], d_sct: npt.NDArray[Any], gamma: npt.NDArray[Any],
    spacing: Sequence[float], rx: float, target: tuple[str, npt.NDArray[np.bool_]],
    oars: Mapping[str, npt.NDArray[np.bool_]], gamma_settings: Mapping[str, Any],
) -> ModalityProducts:
    """The products of one modality; ``spacing`` is (x, y, z) mm, arrays are (z, y, x)."""
    # The points as the DVH metric defines them (evaluator.dose.metrics).
    from evaluator.dose.metrics import d_at, select_oars

    starts = [bin_starts(n, sp) for n, sp in zip(d_ct.shape, tuple(spacing)[::-1], strict=True)]
    codes = gamma_codes(gamma)
    arrays: dict[str, npt.NDArray[Any]] = {
        "dose_ct": block_mean(d_ct, starts).astype(np.float16),
        "dose_sct": block_mean(d_sct, starts).astype(np.float16),
        "dose_diff": block_mean((d_sct.astype(np.float32) - d_ct) * np.float32(100.0 / rx),
                                starts).astype(np.float16),
        "gamma": _reduce(codes, starts, np.maximum).astype(np.uint8),
    }
    name, target_mask = target
    structures = [(name, "target", target_mask)] + [(n, "oar", m) for n, m in oars.items()
                                                      if m.any()]
    in_metric = set(select_oars(d_ct, oars)) | {name}
    top = max(float(d_ct[m].max()) if m.any() else 0.0 for _, _, m in structures)
    top = max(top, max(float(d_sct[m].max()) if m.any() else 0.0 for _, _, m in structures))
    levels = np.linspace(0.0, max(top * 1.02, 1.1 * rx), DVH_POINTS)

    def points(dose: npt.NDArray[Any], role: str) -> dict[str, float]:
        out = {"D2": d_at(dose, 2.0), "Dmean": float(dose.mean())}
        if role == "target":
            out["D98"] = d_at(dose, 98.0)
            out["V95"] = 100.0 * float(np.count_nonzero(dose >= 0.95 * rx)) / dose.size
        return {k: round(v, 5) for k, v in out.items()}

    dvh = [{
        "name": n, "role": role, "in_metric": n in in_metric,
        "ct": cumulative_dvh(d_ct[m], levels), "sct": cumulative_dvh(d_sct[m], levels),
        "points": {"ct": points(d_ct[m], role), "sct": points(d_sct[m], role)},
    } for n, role, m in structures if m.any()]
    evaluated = int(np.count_nonzero(codes != GAMMA_NONE))
    meta = {
        "rx_gy": float(rx),
        "shape": [int(n) for n in d_ct.shape],
        "starts": [[int(i) for i in s] for s in starts],
        "dose_levels_gy": [round(float(v), 5) for v in levels],
        "dvh": dvh,
        "gamma": {"settings": dict(gamma_settings),
                  "pass_rate_pct": round(100.0 * np.count_nonzero(codes == GAMMA_PASS)
                                         / evaluated, 4) if evaluated else None},
    }
    return ModalityProducts(arrays, meta)


def _replace(target: Path, write: Any) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as fh:
        write(fh)
    tmp.replace(target)


def write(prediction: Path, case_name: str, products: CaseProducts) -> None:
    npz, meta_path = paths(prediction, case_name)
    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{m}/{k}": a for m, p in products.modalities.items() for k, a in p.arrays.items()}
    meta = {"version": VERSION, "engine": products.engine,
            "modalities": {m: p.meta for m, p in products.modalities.items()}}
    _replace(npz, lambda fh: np.savez_compressed(fh, **arrays))  # type: ignore[arg-type]
    # The JSON last: its presence says the arrays are complete.
    _replace(meta_path, lambda fh: fh.write(json.dumps(meta, separators=(",", ":")).encode()))


def read_meta(path: Path) -> dict[str, Any] | None:
    """The meta JSON, or None when the case has no (readable, current) products."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        return None
    return meta


def read_arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def coarse_index(starts: Sequence[int], index: int) -> int:
    """The block holding voxel ``index`` of the full grid."""
    return max(0, int(np.searchsorted(np.asarray(starts), index, side="right")) - 1)
