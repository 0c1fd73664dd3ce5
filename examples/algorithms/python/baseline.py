"""A simple, real sCT baseline: a fitted lookup table from (intensity, depth) to HU.

MR intensities alone cannot tell bone from air (both are dark), and CBCT intensities carry
offsets and cupping; where a voxel sits helps: the skull and the pelvic bones lie at typical
depths below the skin, air pockets deeper or at the surface. So each voxel inside the body
mask gets two features:

- its intensity, normalised per image by robust percentiles inside the mask
  (``(x - p50) / (p95 - p5)``: removes the MR's arbitrary scale and the CBCT's offset),
- its depth: the distance in mm to the body mask's surface.

The model is one table per (modality, region): the median CT HU of the training voxels in
each (intensity bin, depth bin) cell (the median minimises the MAE), falling back to the
intensity-only median where a cell saw too few voxels, and to a table pooled over all regions
of the modality for a region the model has not seen. Fitted by ``fit.py`` on training
phantoms at image build time; the table ships as ``model.json`` inside the image.

Only numpy and SimpleITK: the same code runs on the host (fitting) and in the container.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813

INTENSITY_EDGES = [round(-1.5 + 0.1 * i, 2) for i in range(41)]  # normalised intensity
DEPTH_EDGES_MM = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 60.0]
MIN_VOXELS = 5  # a cell with fewer training voxels falls back to the intensity-only median
OUTSIDE_HU = -1000.0  # outside the body mask: air
CHUNK_SLICES = 16  # predict in slabs: bounded memory on 512x512xN volumes
REGION_ALIASES = {"hn": "headandneck", "th": "thorax", "ab": "abdomen"}  # SynthRAD's codes


def table_key(modality: str, region: str) -> str:
    """``mri/headandneck``: case and punctuation do not matter ("Head and Neck", "HN")."""
    name = re.sub(r"[^a-z0-9]", "", region.lower())
    return f"{modality.lower()}/{REGION_ALIASES.get(name, name)}"


def features(image: np.ndarray, mask: np.ndarray,
             spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(normalised intensity, depth in mm) per voxel; arrays (z, y, x), spacing (x, y, z)."""
    inside = mask > 0
    values = image[inside] if inside.any() else image.ravel()
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    scale = float(p95 - p5) or 1.0
    norm = ((image.astype(np.float32) - np.float32(p50)) / np.float32(scale)).astype(np.float32)
    m: Any = sitk.GetImageFromArray(inside.astype(np.uint8))
    m.SetSpacing(tuple(float(s) for s in spacing))
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        m, insideIsPositive=True, squaredDistance=False, useImageSpacing=True))
    return norm, depth.astype(np.float32)


def bin_indices(norm: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i = np.searchsorted(np.asarray(INTENSITY_EDGES, np.float32), norm).astype(np.int16)
    j = np.searchsorted(np.asarray(DEPTH_EDGES_MM, np.float32), depth).astype(np.int16)
    return i, j


def fit_table(norm: np.ndarray, depth: np.ndarray, hu: np.ndarray) -> list[list[float]]:
    """The (intensity bin x depth bin) table of median HU from training voxels (1-D arrays)."""
    ni, nj = len(INTENSITY_EDGES) + 1, len(DEPTH_EDGES_MM) + 1
    i, j = bin_indices(norm, depth)
    by_intensity = np.full(ni, np.nan)
    table = np.full((ni, nj), np.nan)
    order = np.lexsort((hu, j, i))  # grouped by cell, HU sorted within: medians by slicing
    cells = i[order].astype(np.int64) * nj + j[order]
    hu_sorted = hu[order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    ends = np.r_[starts[1:], len(cells)]
    for s, e in zip(starts, ends, strict=True):
        if e - s >= MIN_VOXELS:
            table[cells[s] // nj, cells[s] % nj] = np.median(hu_sorted[s:e])
    for b in range(ni):
        sel = i == b
        if sel.any():
            by_intensity[b] = np.median(hu[sel])
    known = np.flatnonzero(~np.isnan(by_intensity))
    if known.size == 0:
        raise ValueError("no training voxels")
    by_intensity = np.interp(np.arange(ni), known, by_intensity[known])
    table = np.where(np.isnan(table), by_intensity[:, None], table)
    return [[round(float(v), 1) for v in row] for row in table]


def predict(model: dict[str, Any], modality: str, region: str, image: np.ndarray,
            mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """The sCT in HU (float32, same shape); -1000 HU outside the mask."""
    tables = model["tables"]
    found = tables.get(table_key(modality, region)) or tables.get(f"{modality.lower()}/*")
    if found is None:
        raise ValueError(
            f"the model has no table for {modality} inputs (it has {', '.join(sorted(tables))});"
            " rebuild the image with build.sh once the phantom generator offers that task")
    table = np.asarray(found, np.float32)
    norm, depth = features(image, mask, spacing)
    out = np.empty(image.shape, np.float32)
    for z in range(0, image.shape[0], CHUNK_SLICES):
        sl = slice(z, z + CHUNK_SLICES)
        i, j = bin_indices(norm[sl], depth[sl])
        out[sl] = np.where(mask[sl] > 0, table[i, j], OUTSIDE_HU)
    return out
