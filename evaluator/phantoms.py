"""Synthetic phantoms in the SynthRAD directory layout: MRI->CT (task 1) and CBCT->CT (task 2)
for brain, pelvis, head-and-neck, thorax and abdomen.

``DIR/<case>/{mr|cbct,ct,mask,labels,segmentation}.mha`` plus ``region.json`` (a JSON string
such as "Head and Neck", as SynthRAD's ``/input/region.json``). Case ids follow SynthRAD:
``1HNA001`` (task 1 = MR->CT, 2 = CBCT->CT; region code B, P, HN, TH, AB; centre A; number).
Everything is deterministic for a seed; a case's CT is the same in both tasks.

The anatomy (which tissue sits where) is built here (brain, pelvis) and in
:mod:`evaluator.phantom_anatomy` (head-and-neck, thorax, abdomen); every intensity (CT, MR,
CBCT) comes from :mod:`evaluator.phantom_contrast`. Regions, sizes, prescriptions and
structure lists are in :mod:`evaluator.phantom_regions`.
labels: 0 outside the body mask, then :data:`evaluator.segmentation.THRESHOLD_LABELS`
(1 air, 2 soft tissue, 3 bone) from the noiseless tissue map. segmentation: TotalSegmentator
'total' class ids of the region's structures (:data:`evaluator.phantom_regions.TS`).
CBCT task: ``cbct.mha`` (:func:`evaluator.phantom_contrast.cbct_from_ct`) and a mask that is
the body within the CBCT's field of view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from evaluator import phantom_anatomy
from evaluator.io import write_volume
from evaluator.phantom_contrast import (  # noqa: F401 - tissue ids are part of this API
    AIR,
    BLOOD,
    BRAIN_WM,
    CORTICAL,
    FAT,
    FLUID,
    GLAND,
    KIDNEY,
    LIVER,
    LUNG,
    MARROW,
    SOFT,
    TISSUES,
    Tissue,
    cbct_from_ct,
    ct_from_tissue,
    mr_from_tissue,
    texture_field,
    threshold_labels,
)
from evaluator.phantom_layout import Layout, fixed_layout, varied_layout
from evaluator.phantom_regions import REGIONS as REGION_TABLE
from evaluator.phantom_regions import TASKS, region

Anatomy = Literal["brain", "pelvis", "head_neck", "thorax", "abdomen"]
Task = Literal["mri", "cbct"]
Size = Literal["small", "medium", "realistic"]
REGIONS: dict[str, str] = {k: r.name for k, r in REGION_TABLE.items()}
ANATOMY_CODE = {k: r.code for k, r in REGION_TABLE.items()}

# (z, y, x) voxels and the physical field of view in mm (z, y, x).
SHAPES: dict[tuple[str, str], tuple[int, int, int]] = {
    (k, size): shape for k, r in REGION_TABLE.items() for size, shape in r.shapes.items()}
FOV_MM: dict[str, tuple[float, float, float]] = {k: r.fov_mm for k, r in REGION_TABLE.items()}


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


def _tissue_and_segmentation(anatomy: str, shape: tuple[int, int, int],
                              rng: np.random.Generator,
                              layout: Layout) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if anatomy == "brain":
        tissue = _brain(shape, rng)
        return tissue, phantom_anatomy.brain_segmentation(tissue)
    if anatomy == "pelvis":
        tissue = _pelvis(shape, rng, layout)
        return tissue, phantom_anatomy.pelvis_segmentation(tissue, layout)
    build = {"head_neck": phantom_anatomy.head_neck, "thorax": phantom_anatomy.thorax,
             "abdomen": phantom_anatomy.abdomen}[anatomy]
    return build(shape, rng, layout)


def make_case(anatomy: str, size: str, rng: np.random.Generator,
              vary_layout: bool = False, task: str = "mri") -> dict[str, Any]:
    """Arrays for one case: ``mr`` (task mri) or ``cbct`` and ``fov`` (task cbct), ``ct``,
    ``mask``, ``labels``, ``segmentation``, ``spacing`` (x, y, z) and ``layout`` (where the
    target and organs sit: :mod:`evaluator.phantom_layout`).

    ``vary_layout`` draws the target's and organs' positions and sizes from ``rng`` first;
    without it they sit where they always have, and a seed gives the same case as before.
    The CT is drawn before the MR or CBCT, so both tasks of a seed share it. In the CBCT task
    the mask (and the label maps within it) is the body within the CBCT's field of view.
    """
    spec = region(anatomy)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    if size not in spec.shapes:
        raise ValueError(f"unknown size {size!r} (expected small, medium or realistic)")
    shape = spec.shapes[size]
    layout = varied_layout(anatomy, rng) if vary_layout else fixed_layout(anatomy)
    tissue, segmentation = _tissue_and_segmentation(anatomy, shape, rng, layout)

    body = tissue != AIR
    body = ndimage.binary_fill_holes(body)
    mask = ndimage.binary_dilation(body, iterations=1)

    texture = texture_field(shape, rng)
    ct = ct_from_tissue(tissue, texture, rng)
    spacing_zyx = tuple(f / n for f, n in zip(spec.fov_mm, shape, strict=True))
    images: dict[str, Any] = {}
    if task == "mri":
        images["mr"] = mr_from_tissue(tissue, texture, rng)
    else:
        cbct, fov = cbct_from_ct(ct, body, spacing_zyx, rng)  # type: ignore[arg-type]
        images.update(cbct=cbct, fov=fov)
        mask &= fov.astype(bool)

    # Inside the mask (which includes a 1-voxel rim of air around the body) by tissue class.
    labels = np.where(mask, threshold_labels(tissue), 0).astype(np.uint8)
    return {
        **images,
        "ct": ct,
        "mask": mask.astype(np.uint8),
        "labels": labels,
        "segmentation": np.where(mask, segmentation, 0).astype(np.uint8),
        "spacing": (spacing_zyx[2], spacing_zyx[1], spacing_zyx[0]),
        "layout": layout,
    }


def case_id(anatomy: str, index: int, task: str = "mri") -> str:
    return f"{TASKS[task]}{region(anatomy).code}A{index + 1:03d}"


def generate_dataset(
    out_dir: str | Path, anatomy: str, cases: int, seed: int = 0, size: str = "small",
    plans: bool = False, planner: str = "torch_pb", vary_layout: bool = False,
    task: str = "mri",
) -> list[Path]:
    """Write ``cases`` phantom cases under ``out_dir``; returns the case directories.

    With ``plans`` each case also gets ``structures.mha`` and ``plan_{photon,proton}.json``
    (weights optimised on its CT) for the dose metrics (:mod:`evaluator.dose`), steered and
    optimised by ``planner`` (``torch_pb``, or ``pyradplan`` with the optional extra).
    ``vary_layout`` moves and resizes each case's target and organs (and so its plans); off,
    a seed writes the cases it always wrote. ``task``: ``mri`` (mr.mha) or ``cbct``
    (cbct.mha).
    """
    if cases < 1:
        raise ValueError("cases must be at least 1")
    region(anatomy)  # a clear error before any file is written
    return [generate_case(out_dir, anatomy, index, seed, size, plans=plans, planner=planner,
                          vary_layout=vary_layout, task=task)
            for index in range(cases)]


def generate_case(
    out_dir: str | Path, anatomy: str, index: int, seed: int = 0, size: str = "small",
    plans: bool = False, planner: str = "torch_pb", vary_layout: bool = False,
    task: str = "mri",
) -> Path:
    """Write case ``index`` of the dataset ``generate_dataset`` makes (the same bytes: each
    case has its own random stream), so an import can make and store one case at a time."""
    rng = np.random.default_rng([seed, index, region(anatomy).stream])
    arrays = make_case(anatomy, size, rng, vary_layout, task=task)
    case_dir = Path(out_dir) / case_id(anatomy, index, task)
    spacing = arrays["spacing"]
    nz, ny, nx = arrays["ct"].shape
    origin = (-0.5 * spacing[0] * nx, -0.5 * spacing[1] * ny, -0.5 * spacing[2] * nz)
    image = "mr" if task == "mri" else "cbct"
    for name in (image, "ct", "mask", "labels", "segmentation"):
        write_volume(case_dir / f"{name}.mha", arrays[name], spacing=spacing, origin=origin)
    (case_dir / "region.json").write_text(json.dumps(REGIONS[anatomy]) + "\n")
    if plans:
        from evaluator.dose.phantom_plans import write_phantom_plans

        write_phantom_plans(case_dir, arrays["labels"], spacing, anatomy, origin=origin,
                            ct_hu=arrays["ct"].astype(np.float32), planner=planner,
                            layout=arrays["layout"])
    return case_dir
