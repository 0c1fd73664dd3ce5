"""Every intensity the phantom generator writes: tissue properties, CT, MR and CBCT.

The one place to tune the phantoms' contrast (the anatomy, i.e. which tissue sits where, is
in :mod:`evaluator.phantoms` and :mod:`evaluator.phantom_anatomy`):

- :data:`TISSUES`: per tissue class its CT number (HU), threshold-segmenter class and the MR
  parameters (proton density, T1, T2 in ms); :func:`ct_from_tissue` and
  :func:`mr_from_tissue` turn a tissue map into a CT (int16 HU) and an MR (float32).
- :func:`cbct_from_ct`: a CBCT made from the CT (HU offset and gain, cupping, streaks from
  bone, extra blur and noise, a limited field of view) and the mask of that field of view.

Each function draws its randomness from the ``rng`` it is given, in a fixed order, so a seed
always gives the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Tissue:
    hu: float
    label: int  # class of the HU-threshold segmenter (1 air, 2 soft tissue, 3 bone)
    pd: float  # proton density (relative)
    t1: float  # ms
    t2: float  # ms


# Tissue ids are indices into the lookup tables; new tissues are appended so that the
# existing ids (and every case a seed wrote before) stay the same.
AIR, LUNG, FAT, FLUID, SOFT, BRAIN_WM, MARROW, CORTICAL, LIVER, KIDNEY, BLOOD, GLAND = range(12)
TISSUES: dict[int, Tissue] = {
    AIR: Tissue(-1000.0, 1, 0.0, 1.0, 1.0),
    LUNG: Tissue(-800.0, 1, 0.1, 1000.0, 30.0),
    FAT: Tissue(-100.0, 2, 0.9, 260.0, 80.0),
    FLUID: Tissue(10.0, 2, 1.0, 2500.0, 1500.0),
    SOFT: Tissue(40.0, 2, 0.7, 870.0, 47.0),
    BRAIN_WM: Tissue(28.0, 2, 0.65, 600.0, 80.0),
    MARROW: Tissue(300.0, 3, 0.8, 350.0, 70.0),
    CORTICAL: Tissue(1200.0, 3, 0.05, 1000.0, 1.0),
    LIVER: Tissue(60.0, 2, 0.7, 810.0, 42.0),
    KIDNEY: Tissue(35.0, 2, 0.8, 1200.0, 85.0),
    BLOOD: Tissue(45.0, 2, 0.85, 1550.0, 250.0),  # heart chambers, great vessels
    GLAND: Tissue(100.0, 2, 0.75, 1000.0, 60.0),  # thyroid (iodine: brighter on CT)
}
TR_MS, TE_MS = 500.0, 15.0


def _shape(a: Array) -> tuple[int, ...]:
    return tuple(int(n) for n in a.shape)


def _lut(key: str) -> Array:
    return np.array([getattr(TISSUES[i], key) for i in range(len(TISSUES))], np.float32)


def threshold_labels(tissue: Array) -> Array:
    """The HU-threshold segmenter's class of each voxel's tissue."""
    lut = np.array([TISSUES[i].label for i in range(len(TISSUES))], np.uint8)
    out: Array = lut[tissue]
    return out


def texture_field(shape: tuple[int, ...], rng: np.random.Generator) -> Array:
    """Smooth unit-variance texture shared by the CT and the MR of a case."""
    texture: Array = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape).astype(np.float32), 2.0)
    texture /= max(float(texture.std()), 1e-6)
    return texture


def ct_from_tissue(tissue: Array, texture: Array, rng: np.random.Generator) -> Array:
    """CT (int16 HU): tissue HU plus texture (stronger in marrow), slight blur, noise."""
    hu = _lut("hu")[tissue] + np.where(tissue == MARROW, 40.0, 8.0).astype(np.float32) * texture
    hu = ndimage.gaussian_filter(hu, 0.6)
    hu += rng.normal(0.0, 15.0, _shape(tissue)).astype(np.float32)
    out: Array = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return out


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, amplitude: float) -> Array:
    """A smooth random field (low-order polynomial in the coordinates), mean ~0."""
    z, y, x = (np.linspace(-1.0, 1.0, n, dtype=np.float32).reshape(
        [n if i == d else 1 for i in range(3)]) for d, n in enumerate(shape))
    a = rng.normal(0.0, 1.0, size=6).astype(np.float32)
    f: Array = a[0] * x + a[1] * y + a[2] * z + a[3] * x * y + a[4] * y * z + a[5] * x * x
    return (amplitude / 3.0) * f


def mr_from_tissue(tissue: Array, texture: Array, rng: np.random.Generator) -> Array:
    """MR (float32): spin-echo signal PD (1 - exp(-TR/T1)) exp(-TE/T2) per tissue, texture,
    slight blur, a smooth bias field and Rician noise (cortical bone and air both dark)."""
    shape = _shape(tissue)
    pd, t1, t2 = _lut("pd")[tissue], _lut("t1")[tissue], _lut("t2")[tissue]
    signal = pd * (1.0 - np.exp(-TR_MS / t1)) * np.exp(-TE_MS / t2)
    signal = ndimage.gaussian_filter(signal * (1.0 + 0.05 * texture), 0.6)
    signal *= np.exp(_smooth_field(shape, rng, 0.25))  # bias field
    sigma = 0.02 * float(signal.max())
    n1 = rng.normal(0.0, sigma, shape).astype(np.float32)
    n2 = rng.normal(0.0, sigma, shape).astype(np.float32)
    out: Array = (np.sqrt((signal + n1) ** 2 + n2**2) * 1000.0).astype(np.float32)
    return out


# CBCT artefact strengths (drawn per case within these ranges)
CBCT_GAIN = (0.88, 1.02)  # HU scale against the CT
CBCT_OFFSET_HU = (-120.0, 40.0)  # HU shift against the CT
CBCT_CUPPING_HU = (80.0, 160.0)  # how much darker the centre of the body is than its edge
CBCT_STREAK_HU = (25.0, 60.0)  # amplitude of the bright/dark streaks through bone
CBCT_NOISE_HU = 35.0
CBCT_FOV_RADIUS = 0.8  # axial field of view: this fraction of the half-width (y) of the scan
CBCT_FOV_Z = 0.85  # and |z| within this fraction of the scan length
CBCT_OUTSIDE_HU = -1000  # what the scanner reports outside its field of view


def cbct_fov(shape: tuple[int, ...], spacing_zyx: tuple[float, float, float]) -> Array:
    """The CBCT's field of view: a cylinder about the scan's z axis (a disc of radius
    ``CBCT_FOV_RADIUS`` times the y half-width, in mm so that it is round), cut in z."""
    half_y = 0.5 * shape[1] * spacing_zyx[1]
    radius = CBCT_FOV_RADIUS * half_y
    z, y, x = (((np.arange(n, dtype=np.float32) + 0.5) - 0.5 * n) * s
               for n, s in zip(shape, spacing_zyx, strict=True))
    rr = y[:, None] ** 2 + x[None, :] ** 2
    disc = rr <= radius**2
    slab = np.abs(z) <= CBCT_FOV_Z * 0.5 * shape[0] * spacing_zyx[0]
    out: Array = slab[:, None, None] & disc[None, :, :]
    return out


def cbct_from_ct(ct: Array, body: Array, spacing_zyx: tuple[float, float, float],
                 rng: np.random.Generator) -> tuple[Array, Array]:
    """A CBCT made from ``ct`` (int16 HU) and the mask of its field of view (uint8).

    HU gain and offset, cupping (the body's centre darker, from scatter and beam hardening),
    streaks radiating from dense bone, extra blur, noise; outside the field of view the CBCT
    holds ``CBCT_OUTSIDE_HU``. ``body`` is the body mask (the cupping follows its extent)."""
    shape = _shape(ct)
    fov = cbct_fov(shape, spacing_zyx)
    gain = float(rng.uniform(*CBCT_GAIN))
    offset = float(rng.uniform(*CBCT_OFFSET_HU))
    img = ndimage.gaussian_filter(ct.astype(np.float32), 1.0) * gain + offset

    # Cupping: distance to the body's edge in each axial slice, normalised per slice.
    depth = np.zeros(shape, np.float32)
    for k in range(shape[0]):
        if body[k].any():
            d = ndimage.distance_transform_edt(body[k], sampling=spacing_zyx[1:])
            depth[k] = d / max(float(d.max()), 1e-6)
    cup = float(rng.uniform(*CBCT_CUPPING_HU))
    img -= cup * depth * body

    # Streaks: lines through the densest bone of each slice at a few angles, alternating sign.
    ny, nx = shape[1:]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    amp = float(rng.uniform(*CBCT_STREAK_HU))
    angles = rng.uniform(0.0, np.pi, size=4)
    bone = ct > 700
    for k in range(shape[0]):
        if not bone[k].any():
            continue
        cy, cx = (float(v) for v in np.argwhere(bone[k]).mean(axis=0))
        streak = np.zeros((ny, nx), np.float32)
        for i, theta in enumerate(angles):
            dist = np.abs((yy - cy) * np.cos(theta) - (xx - cx) * np.sin(theta))
            streak += (1.0 if i % 2 == 0 else -1.0) * np.exp(-((dist / 1.5) ** 2))
        img[k] += amp * streak * body[k]

    low = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape).astype(np.float32), 3.0)
    img += low / max(float(low.std()), 1e-6) * 15.0  # low-frequency mottle
    img += rng.normal(0.0, CBCT_NOISE_HU, shape).astype(np.float32)
    img = np.where(fov, img, float(CBCT_OUTSIDE_HU))
    out: Array = np.clip(np.round(img), -1024, 3071).astype(np.int16)
    return out, fov.astype(np.uint8)
