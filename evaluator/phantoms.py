"""Synthetic paired MR/CT phantoms (brain, pelvis) in the SynthRAD directory layout.

``DIR/<case>/{mr,ct,mask,labels}.mha`` plus ``region.json`` (a JSON string, "Brain" or
"Pelvis", as SynthRAD's ``/input/region.json``). Case ids follow SynthRAD: ``1BA001`` (task 1
= MR->CT, B = brain / P = pelvis, centre A, number). Everything is deterministic for a seed.

CT: tissue classes (air -1000, lung -800, fat -100, fluid 10, soft tissue ~40, marrow ~300,
cortical bone ~1200 HU) with smooth texture, a slight blur and Gaussian noise, stored int16.
MR: spin-echo signal S = PD (1 - exp(-TR/T1)) exp(-TE/T2) per tissue, times a smooth bias
field, slight blur, Rician noise (cortical bone and air both dark), stored float32.
labels: 0 outside the body mask, then :data:`evaluator.segmentation.THRESHOLD_LABELS`
(1 air, 2 soft tissue, 3 bone) from the noiseless tissue map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from evaluator.io import write_volume
from evaluator.phantom_layout import Layout, fixed_layout, varied_layout

Anatomy = Literal["brain", "pelvis"]
Size = Literal["small", "realistic"]
REGIONS: dict[str, str] = {"brain": "Brain", "pelvis": "Pelvis"}
ANATOMY_CODE = {"brain": "B", "pelvis": "P"}

# (z, y, x) voxels and the physical field of view in mm (z, y, x).
SHAPES: dict[tuple[str, str], tuple[int, int, int]] = {
    ("brain", "small"): (48, 64, 64),
    ("brain", "medium"): (100, 128, 128),
    ("brain", "realistic"): (200, 256, 256),
    ("pelvis", "small"): (40, 64, 80),
    ("pelvis", "medium"): (75, 128, 160),
    ("pelvis", "realistic"): (150, 512, 512),
}
FOV_MM: dict[str, tuple[float, float, float]] = {
    "brain": (200.0, 256.0, 256.0),
    "pelvis": (375.0, 440.0, 512.0),
}


@dataclass(frozen=True)
class Tissue:
    hu: float
    label: int  # segmentation class (THRESHOLD_LABELS)
    pd: float  # proton density (relative)
    t1: float  # ms
    t2: float  # ms


AIR, LUNG, FAT, FLUID, SOFT, BRAIN_WM, MARROW, CORTICAL = range(8)
TISSUES: dict[int, Tissue] = {
    AIR: Tissue(-1000.0, 1, 0.0, 1.0, 1.0),
    LUNG: Tissue(-800.0, 1, 0.1, 1000.0, 30.0),
    FAT: Tissue(-100.0, 2, 0.9, 260.0, 80.0),
    FLUID: Tissue(10.0, 2, 1.0, 2500.0, 1500.0),
    SOFT: Tissue(40.0, 2, 0.7, 870.0, 47.0),
    BRAIN_WM: Tissue(28.0, 2, 0.65, 600.0, 80.0),
    MARROW: Tissue(300.0, 3, 0.8, 350.0, 70.0),
    CORTICAL: Tissue(1200.0, 3, 0.05, 1000.0, 1.0),
}
TR_MS, TE_MS = 500.0, 15.0


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray[Any, Any], ...]:
    """Coordinates in [-1, 1] along each axis (open grids, float32)."""
    return tuple(
        np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(
            [n if i == d else 1 for i in range(3)]
        )
        for d, n in enumerate(shape)
    )


def _ellipsoid(g: tuple[np.ndarray[Any, Any], ...], center: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray[Any, Any]:
    z, y, x = g
    r: np.ndarray[Any, Any] = (
        ((z - center[0]) / radii[0]) ** 2
        + ((y - center[1]) / radii[1]) ** 2
        + ((x - center[2]) / radii[2]) ** 2
    )
    return r


def _brain(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    g = _grid(shape)
    j = rng.uniform(0.95, 1.05, size=3)
    c0, c1, c2 = (float(v) for v in rng.uniform(-0.03, 0.03, size=3))
    c = (c0, c1, c2)
    t = np.full(shape, AIR, dtype=np.uint8)
    head = _ellipsoid(g, c, (0.85 * j[0], 0.80 * j[1], 0.70 * j[2]))
    t[head < 1.0] = FAT  # scalp
    t[head < 0.93] = CORTICAL  # outer table
    t[head < 0.87] = MARROW  # diploe
    t[head < 0.83] = CORTICAL  # inner table
    t[head < 0.72] = SOFT  # grey matter
    t[head < 0.45] = BRAIN_WM
    ventricles = _ellipsoid(g, (c[0] + 0.05, c[1], c[2]), (0.18, 0.25, 0.08))
    t[ventricles < 1.0] = FLUID
    # sinus: an air pocket at the front, lower half
    sinus = _ellipsoid(g, (c[0] - 0.4, c[1] - 0.5 * j[1], c[2]), (0.12, 0.1, 0.15))
    t[sinus < 1.0] = AIR
    return t


def _pelvis(shape: tuple[int, int, int], rng: np.random.Generator,
            layout: Layout | None = None) -> np.ndarray[Any, Any]:
    g = _grid(shape)
    z, y, x = g
    j = rng.uniform(0.95, 1.05, size=2)
    t = np.full(shape, AIR, dtype=np.uint8)
    body = ((y / (0.62 * j[0])) ** 2 + (x / (0.85 * j[1])) ** 2) + 0 * z
    t[body < 1.0] = FAT
    t[body < 0.80] = SOFT
    for side in (-1.0, 1.0):  # femoral heads/hip bones: cortical shell around marrow
        cx = side * float(rng.uniform(0.42, 0.48))
        bone = _ellipsoid(g, (0.0, 0.05, cx), (1.3, 0.16, 0.13))
        t[bone < 1.0] = CORTICAL
        t[bone < 0.55] = MARROW
    sacrum = _ellipsoid(g, (0.0, 0.42 * j[0], 0.0), (1.5, 0.10, 0.14))
    t[sacrum < 1.0] = CORTICAL
    t[sacrum < 0.5] = MARROW
    organs = (layout or fixed_layout("pelvis")).oars
    bladder = _ellipsoid(g, organs["bladder"].centre, organs["bladder"].radii)
    t[bladder < 1.0] = FLUID
    r = organs["rectum"].radii  # the gas column; the organ (wall included) is 0.02 wider
    rectum = _ellipsoid(g, organs["rectum"].centre, (r[0], r[1] - 0.02, r[2] - 0.02))
    t[rectum < 1.0] = AIR
    bowel = _ellipsoid(g, (0.7, -0.15, float(rng.uniform(-0.2, 0.2))), (0.3, 0.12, 0.2))
    t[bowel < 1.0] = LUNG  # low-density gas/content mix
    return t


def _smooth_field(shape: tuple[int, int, int], rng: np.random.Generator,
                  amplitude: float) -> np.ndarray[Any, Any]:
    """A smooth random field (low-order polynomial in the coordinates), mean ~0."""
    z, y, x = _grid(shape)
    a = rng.normal(0.0, 1.0, size=6).astype(np.float32)
    f: np.ndarray[Any, Any] = a[0] * x + a[1] * y + a[2] * z + a[3] * x * y + a[4] * y * z \
        + a[5] * x * x
    return (amplitude / 3.0) * f


def make_case(anatomy: str, size: str, rng: np.random.Generator,
              vary_layout: bool = False) -> dict[str, Any]:
    """Arrays for one case: ``mr``, ``ct``, ``mask``, ``labels``, ``spacing`` (x, y, z) and
    ``layout`` (where the target and organs sit: :mod:`evaluator.phantom_layout`).

    ``vary_layout`` draws the target's and organs' positions and sizes from ``rng`` first;
    without it they sit where they always have, and a seed gives the same case as before.
    """
    if anatomy not in REGIONS:
        raise ValueError(f"unknown anatomy {anatomy!r} (expected brain or pelvis)")
    if (anatomy, size) not in SHAPES:
        raise ValueError(f"unknown size {size!r} (expected small, medium or realistic)")
    shape = SHAPES[(anatomy, size)]
    layout = varied_layout(anatomy, rng) if vary_layout else fixed_layout(anatomy)
    tissue = _brain(shape, rng) if anatomy == "brain" else _pelvis(shape, rng, layout)
    lut = {k: np.array([getattr(TISSUES[i], k) for i in range(len(TISSUES))], np.float32)
           for k in ("hu", "pd", "t1", "t2")}
    label_lut = np.array([TISSUES[i].label for i in range(len(TISSUES))], np.uint8)

    body = tissue != AIR
    body = ndimage.binary_fill_holes(body)
    mask = ndimage.binary_dilation(body, iterations=1)

    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape).astype(np.float32), 2.0)
    texture /= max(float(texture.std()), 1e-6)
    hu = lut["hu"][tissue] + np.where(tissue == MARROW, 40.0, 8.0).astype(np.float32) * texture
    hu = ndimage.gaussian_filter(hu, 0.6)
    hu += rng.normal(0.0, 15.0, shape).astype(np.float32)
    ct = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    pd, t1, t2 = lut["pd"][tissue], lut["t1"][tissue], lut["t2"][tissue]
    signal = pd * (1.0 - np.exp(-TR_MS / t1)) * np.exp(-TE_MS / t2)
    signal = ndimage.gaussian_filter(signal * (1.0 + 0.05 * texture), 0.6)
    signal *= np.exp(_smooth_field(shape, rng, 0.25))  # bias field
    sigma = 0.02 * float(signal.max())
    n1 = rng.normal(0.0, sigma, shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, shape).astype(np.float32)
    mr = (np.sqrt((signal + n1) ** 2 + n2**2) * 1000.0).astype(np.float32)

    # Inside the mask (which includes a 1-voxel rim of air around the body) by tissue class.
    labels = np.where(mask, label_lut[tissue], 0).astype(np.uint8)
    fov = FOV_MM[anatomy]
    spacing_zyx = tuple(f / n for f, n in zip(fov, shape, strict=True))
    return {
        "mr": mr,
        "ct": ct,
        "mask": mask.astype(np.uint8),
        "labels": labels,
        "spacing": (spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]),
        "layout": layout,
    }


def case_id(anatomy: str, index: int) -> str:
    return f"1{ANATOMY_CODE[anatomy]}A{index + 1:03d}"


def generate_dataset(
    out_dir: str | Path, anatomy: str, cases: int, seed: int = 0, size: str = "small",
    plans: bool = False, planner: str = "torch_pb", vary_layout: bool = False,
) -> list[Path]:
    """Write ``cases`` phantom cases under ``out_dir``; returns the case directories.

    With ``plans`` each case also gets ``structures.mha`` and ``plan_{photon,proton}.json``
    (weights optimised on its CT) for the dose metrics (:mod:`evaluator.dose`), steered and
    optimised by ``planner`` (``torch_pb``, or ``pyradplan`` with the optional extra).
    ``vary_layout`` moves and resizes each case's target and organs (and so its plans); off,
    a seed writes the cases it always wrote.
    """
    if cases < 1:
        raise ValueError("cases must be at least 1")
    return [generate_case(out_dir, anatomy, index, seed, size, plans=plans, planner=planner,
                          vary_layout=vary_layout)
            for index in range(cases)]


def generate_case(
    out_dir: str | Path, anatomy: str, index: int, seed: int = 0, size: str = "small",
    plans: bool = False, planner: str = "torch_pb", vary_layout: bool = False,
) -> Path:
    """Write case ``index`` of the dataset ``generate_dataset`` makes (the same bytes: each
    case has its own random stream), so an import can make and store one case at a time."""
    rng = np.random.default_rng([seed, index, 0 if anatomy == "brain" else 1])
    arrays = make_case(anatomy, size, rng, vary_layout)
    case_dir = Path(out_dir) / case_id(anatomy, index)
    spacing = arrays["spacing"]
    nz, ny, nx = arrays["ct"].shape
    origin = (-0.5 * spacing[0] * nx, -0.5 * spacing[1] * ny, -0.5 * spacing[2] * nz)
    for name in ("mr", "ct", "mask", "labels"):
        write_volume(case_dir / f"{name}.mha", arrays[name], spacing=spacing, origin=origin)
    (case_dir / "region.json").write_text(json.dumps(REGIONS[anatomy]) + "\n")
    if plans:
        from evaluator.dose.phantom_plans import write_phantom_plans

        write_phantom_plans(case_dir, arrays["labels"], spacing, anatomy, origin=origin,
                            ct_hu=arrays["ct"].astype(np.float32), planner=planner,
                            layout=arrays["layout"])
    return case_dir
