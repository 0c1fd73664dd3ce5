"""Tissue maps and TotalSegmentator-style label maps of the head-and-neck, thorax and abdomen
phantoms (and the label maps of the brain and pelvis phantoms' tissue).

Each builder returns ``(tissue, segmentation)``: tissue ids of :mod:`evaluator.phantom_contrast`
and TotalSegmentator 'total' class ids (:data:`evaluator.phantom_regions.TS`) on a (z, y, x)
grid in normalised coordinates ([-1, 1]; +z superior, +y posterior, +x the patient's left).
Organs the layout places (:mod:`evaluator.phantom_layout`) are drawn from its ellipsoids, so a
varied layout moves them in the images and in the plans' structures alike. Sizes are
plausible for an adult (e.g. a vertebral body ~4 cm across, ribs ~1 cm thick).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluator.phantom_contrast import (
    AIR,
    BLOOD,
    CORTICAL,
    FAT,
    FLUID,
    GLAND,
    KIDNEY,
    LIVER,
    LUNG,
    MARROW,
    SOFT,
)
from evaluator.phantom_layout import Ellipsoid, Layout
from evaluator.phantom_regions import TS

Array = np.ndarray[Any, Any]
Grid = tuple[Array, Array, Array]


def grid(shape: tuple[int, int, int]) -> Grid:
    """Open coordinate grids in [-1, 1] along z, y, x (float32)."""
    z, y, x = (np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(
        [n if i == d else 1 for i in range(3)]) for d, n in enumerate(shape))
    return z, y, x


def ell(g: Grid, e: Ellipsoid) -> Array:
    """The ellipsoid's value on the grid (< 1 inside)."""
    z, y, x = g
    out: Array = (((z - e.centre[0]) / e.radii[0]) ** 2 + ((y - e.centre[1]) / e.radii[1]) ** 2
                  + ((x - e.centre[2]) / e.radii[2]) ** 2)
    return out


def axial(g: Grid, cy: float, cx: float, ry: float, rx: float) -> Array:
    """An elliptic cylinder along z: its value on the (y, x) grid (< 1 inside)."""
    _, y, x = g
    out: Array = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    return out


def _spine(t: Array, seg: Array, g: Grid, cord: Ellipsoid, body_r: tuple[float, float],
           levels: list[str], top: float = 1.0) -> None:
    """Vertebrae (body: cortical shell around marrow; posterior arch around the canal) stacked
    from ``top`` to the bottom of the volume, ``levels`` top first, each with a disc below it;
    the spinal canal (CSF) holds the cord from ``cord``."""
    z = g[0]
    _, cy, cx = cord.centre
    canal_ry, canal_rx = cord.radii[1] / 0.6, cord.radii[2] / 0.6
    body_cy = cy - canal_ry * 1.4 - body_r[0]
    body = axial(g, body_cy, cx, *body_r)
    arch = axial(g, cy, cx, canal_ry * 2.0, canal_rx * 2.4)
    canal = axial(g, cy, cx, canal_ry, canal_rx)
    below = z < top
    column = ((body < 1.0) | ((arch < 1.0) & (canal >= 1.0))) & below
    t[column] = SOFT  # discs and ligaments between the bones
    step = (top + 1.0) / len(levels)
    for k, name in enumerate(levels):
        upper = top - k * step
        inz = (z < upper) & (z >= upper - 0.85 * step)
        bone = inz & column
        t[bone] = CORTICAL
        t[inz & (body < 0.5)] = MARROW
        seg[bone] = TS[name]
    t[(canal < 1.0) & below] = FLUID
    cord_mask = (ell(g, cord) < 1.0) & (canal < 0.6) & below
    t[cord_mask] = SOFT
    seg[cord_mask] = TS["spinal_cord"]


def _draw(t: Array, seg: Array, mask: Array, tissue: int, label: int | None = None) -> None:
    t[mask] = tissue
    if label is not None:
        seg[mask] = label


def head_neck(shape: tuple[int, int, int], rng: np.random.Generator,
              layout: Layout) -> tuple[Array, Array]:
    """Skull and brain above, the face and mandible, the neck with the cervical spine, the
    airway (pharynx, trachea), esophagus, thyroid and parotids; shoulders at the bottom."""
    g = grid(shape)
    z, y, x = g
    j = rng.uniform(0.95, 1.05, size=3)
    t = np.full(shape, AIR, dtype=np.uint8)
    seg = np.zeros(shape, dtype=np.uint8)
    head = ell(g, Ellipsoid((0.55, 0.0, 0.0), (0.48 * j[0], 0.72 * j[1], 0.62 * j[2])))
    t[head < 1.0] = FAT
    t[head < 0.9] = CORTICAL
    t[head < 0.84] = MARROW
    t[head < 0.8] = CORTICAL
    seg[(head < 0.9) & (head >= 0.72)] = TS["skull"]
    t[head < 0.72] = SOFT
    seg[head < 0.72] = TS["brain"]
    face = ell(g, Ellipsoid((0.02, -0.2, 0.0), (0.36, 0.55 * j[1], 0.5 * j[2])))
    t[(face < 1.0) & (head >= 0.9)] = FAT
    t[(face < 0.8) & (head >= 0.9)] = SOFT
    # Neck, widening into the shoulders below z = -0.7.
    rx = 0.42 * j[2] + 0.5 * np.clip((-0.7 - z) / 0.3, 0.0, 1.0)
    neck = (((y - 0.05) / (0.45 * j[1])) ** 2 + (x / rx) ** 2) * (z < 0.15)
    neck = np.where(z < 0.15, neck, 9.0)
    t[(neck < 1.0) & (head >= 0.9)] = FAT
    t[(neck < 0.8) & (head >= 0.9)] = SOFT
    # Mandible: a U of bone open to the back, rising into the rami.
    jaw = axial(g, -0.18, 0.0, 0.42, 0.36)
    zjaw = -0.15 + 0.25 * np.clip(y + 0.15, 0.0, 1.0)
    mandible = (jaw < 1.0) & (jaw > 0.72) & (y < 0.0) & (z > zjaw - 0.12) & (z < zjaw)
    _draw(t, seg, mandible, CORTICAL, TS["skull"])
    oars = layout.oars
    _spine(t, seg, g, oars["spinal_cord"], (0.09, 0.1),
           [f"vertebrae_C{n}" for n in range(1, 8)] + ["vertebrae_T1"], top=0.1)
    thyroid = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        thyroid |= ell(g, Ellipsoid((-0.55, -0.13, side * 0.13), (0.12, 0.06, 0.06))) < 1.0
    _draw(t, seg, thyroid, GLAND, TS["thyroid_gland"])
    esophagus = (axial(g, 0.03, 0.0, 0.045, 0.06) < 1.0) & (z < -0.3)
    _draw(t, seg, esophagus, SOFT, TS["esophagus"])
    airway = (axial(g, -0.12, 0.0, 0.07, 0.07) < 1.0) & (z < 0.2)
    _draw(t, seg, airway, AIR, 0)
    seg[airway & (z < -0.25)] = TS["trachea"]
    for name in ("parotid_l", "parotid_r"):
        gland = (ell(g, oars[name]) < 1.0) & (head >= 0.9)
        _draw(t, seg, gland, SOFT, 0)  # not a 'total' class
    return t, seg


def _lobes(seg: Array, g: Grid, lung: Array, left: bool) -> None:
    """Split a lung by its fissures: the oblique one (lower lobe: posterior and inferior) and,
    on the right, the horizontal one (middle lobe: anterior, between the two)."""
    z, y, _ = g
    lower = (z - 0.1) < 0.8 * (y + 0.1) - 0.3
    if left:
        seg[lung & lower] = TS["lung_lower_lobe_left"]
        seg[lung & ~lower] = TS["lung_upper_lobe_left"]
        return
    middle = ~lower & (z < 0.15)
    seg[lung & lower] = TS["lung_lower_lobe_right"]
    seg[lung & middle] = TS["lung_middle_lobe_right"]
    seg[lung & ~lower & ~middle] = TS["lung_upper_lobe_right"]


def thorax(shape: tuple[int, int, int], rng: np.random.Generator,
           layout: Layout) -> tuple[Array, Array]:
    """Chest wall (fat, muscle, 12 rib pairs, sternum), both lungs with their lobes (a tumour
    where the layout's target is), the heart, trachea, esophagus and the thoracic spine."""
    g = grid(shape)
    z, y, x = g
    j = rng.uniform(0.95, 1.05, size=2)
    t = np.full(shape, AIR, dtype=np.uint8)
    seg = np.zeros(shape, dtype=np.uint8)
    body = axial(g, 0.0, 0.0, 0.6 * j[0], 0.85 * j[1])
    body = np.broadcast_to(body, shape)
    t[body < 1.0] = FAT
    t[body < 0.85] = SOFT
    oars = layout.oars
    inner = body < 0.66
    for name, left in (("lung_l", True), ("lung_r", False)):
        lung = (ell(g, oars[name]) < 1.0) & inner
        t[lung] = LUNG
        _lobes(seg, g, lung, left)
    r = layout.ptv.radii
    tumour = (ell(g, Ellipsoid(layout.ptv.centre, (0.6 * r[0], 0.6 * r[1], 0.6 * r[2])))
              < 1.0) & (t == LUNG)
    t[tumour] = SOFT
    heart = ell(g, oars["heart"]) < 1.0
    _draw(t, seg, heart, SOFT, TS["heart"])
    t[ell(g, oars["heart"]) < 0.55] = BLOOD
    # Ribs: rings just inside the muscle, sloping down towards the front; none at the spine
    # or the sternum.
    ring = (body >= 0.7) & (body < 0.78)
    gap = ((np.abs(x) < 0.16) & (y < 0.0)) | ((np.abs(x) < 0.1) & (y > 0.0))
    for k in range(1, 13):
        level = 1.0 - (k - 0.3) * 2.0 / 12.0
        zr = level - 0.15 * (0.6 - y) / 1.2
        rib = ring & ~gap & (np.abs(z - zr) < 0.04)
        for left in (True, False):
            side = rib & ((x > 0) if left else (x <= 0))
            _draw(t, seg, side, CORTICAL, TS[f"rib_{'left' if left else 'right'}_{k}"])
    sternum = ell(g, Ellipsoid((0.3, -0.5 * j[0], 0.0), (0.6, 0.06, 0.09)))
    _draw(t, seg, sternum < 1.0, CORTICAL, TS["sternum"])
    t[sternum < 0.5] = MARROW
    esophagus = ell(g, oars["esophagus"]) < 1.0
    _draw(t, seg, esophagus, SOFT, TS["esophagus"])
    trachea = (axial(g, 0.05, 0.0, 0.05, 0.04) < 1.0) & (z > 0.35)
    _draw(t, seg, trachea, AIR, TS["trachea"])
    _spine(t, seg, g, oars["spinal_cord"], (0.1, 0.075),
           [f"vertebrae_T{n}" for n in range(1, 13)])
    return t, seg


def abdomen(shape: tuple[int, int, int], rng: np.random.Generator,
            layout: Layout) -> tuple[Array, Array]:
    """Abdominal wall (fat, muscle), liver, kidneys, spleen, stomach (wall, content, gas),
    aorta, bowel gas and the lower thoracic and lumbar spine."""
    g = grid(shape)
    _z, y, x = g
    j = rng.uniform(0.95, 1.05, size=2)
    t = np.full(shape, AIR, dtype=np.uint8)
    seg = np.zeros(shape, dtype=np.uint8)
    body = np.broadcast_to(axial(g, 0.0, 0.0, 0.62 * j[0], 0.88 * j[1]), shape)
    t[body < 1.0] = FAT
    t[body < 0.8] = SOFT
    inner = body < 0.72
    for _ in range(4):  # bowel gas pockets, anterior and below the stomach
        c = (float(rng.uniform(-0.8, 0.0)), float(rng.uniform(-0.45, -0.15)),
             float(rng.uniform(-0.4, 0.4)))
        gas = (ell(g, Ellipsoid(c, (0.08, 0.05, 0.07))) < 1.0) & inner
        t[gas] = AIR
    oars = layout.oars
    # Retroperitoneal fat behind the organs and perirenal fat around the kidneys (what
    # makes the kidneys stand out on a CT without contrast).
    t[inner & (y > 0.08 + 0.25 * x**2) & (np.abs(x) > 0.15) & (y < 0.45)] = FAT
    for name in ("kidney_l", "kidney_r"):
        e = oars[name]
        t[(ell(g, Ellipsoid(e.centre, (e.radii[0] * 1.25, e.radii[1] * 1.5, e.radii[2] * 1.6)))
           < 1.0) & inner] = FAT
    _draw(t, seg, (ell(g, oars["liver"]) < 1.0) & inner, LIVER, TS["liver"])
    for name, label in (("kidney_l", "kidney_left"), ("kidney_r", "kidney_right")):
        _draw(t, seg, (ell(g, oars[name]) < 1.0) & inner, KIDNEY, TS[label])
    spleen = ell(g, Ellipsoid((0.35, 0.2, 0.5), (0.2, 0.15, 0.09))) < 1.0
    _draw(t, seg, spleen & inner, SOFT, TS["spleen"])
    stomach = ell(g, oars["stomach"])
    _draw(t, seg, (stomach < 1.0) & inner, SOFT, TS["stomach"])
    t[(stomach < 0.6) & inner] = FLUID
    sy = oars["stomach"].centre[1]
    t[(stomach < 0.6) & (y < sy - 0.05) & inner] = AIR  # gas rises to the front (supine)
    aorta = axial(g, 0.1, 0.06, 0.045, 0.04) < 1.0
    _draw(t, seg, np.broadcast_to(aorta, shape), BLOOD, TS["aorta"])
    _spine(t, seg, g, oars["spinal_cord"], (0.11, 0.08),
           ["vertebrae_T11", "vertebrae_T12"] + [f"vertebrae_L{n}" for n in range(1, 5)])
    return t, seg


def brain_segmentation(tissue: Array) -> Array:
    """Brain (everything soft inside the skull) and skull of the brain phantom."""
    bone = (tissue == CORTICAL) | (tissue == MARROW)
    seg = np.zeros(tissue.shape, np.uint8)
    seg[bone] = TS["skull"]
    # Inside the inner table: fill each axial slice's skull ring and keep the soft tissue.
    from scipy import ndimage

    inside = ndimage.binary_fill_holes(bone) & ~bone
    seg[inside & (tissue != AIR)] = TS["brain"]
    return seg


def pelvis_segmentation(tissue: Array, layout: Layout) -> Array:
    """Bladder, sacrum and hip bones of the pelvis phantom."""
    nz, ny, nx = tissue.shape
    g = grid((nz, ny, nx))
    _, y, x = g
    bone = (tissue == CORTICAL) | (tissue == MARROW)
    seg = np.zeros(tissue.shape, np.uint8)
    sacrum = bone & (np.abs(x) < 0.2) & (y > 0.25)
    seg[bone & (x > 0) & ~sacrum] = TS["hip_left"]
    seg[bone & (x <= 0) & ~sacrum] = TS["hip_right"]
    seg[sacrum] = TS["sacrum"]
    bladder = ell(g, layout.oars["bladder"]) < 1.0
    seg[bladder & (tissue == FLUID)] = TS["urinary_bladder"]
    return seg
