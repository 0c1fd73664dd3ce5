"""PNG slices of case volumes for the slice viewer (input MR/CBCT, sCT, CT, sCT − CT).

Volumes are read with SimpleITK, kept in a small LRU cache (moving the slider asks for many
slices of the same volumes) and encoded with a minimal PNG writer (zlib), so nothing beyond
numpy and SimpleITK is needed. Who may see which slice is decided in ``backend.web.views``.
"""

from __future__ import annotations

import enum
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from backend.errors import BadRequestError, NotFoundError

FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]


class SliceKind(enum.StrEnum):
    INPUT = "input"
    SCT = "sct"
    CT = "ct"
    DIFF = "diff"


class Axis(enum.StrEnum):
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"


# Display windows (HU). The difference uses a diverging map centred on 0.
CT_WINDOW = (-1000.0, 1500.0)
DIFF_RANGE = 500.0


@dataclass(frozen=True)
class LoadedVolume:
    array: FloatArray  # z, y, x
    spacing: tuple[float, float, float]  # x, y, z (SimpleITK order)
    window: tuple[float, float]  # robust intensity range, for MR/CBCT display


_cache: OrderedDict[tuple[str, float], LoadedVolume] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 8


def _sitk() -> Any:
    """SimpleITK, imported on first use (it ships no type hints)."""
    import SimpleITK

    return SimpleITK


def load_volume(path: Path) -> LoadedVolume:
    if not path.is_file():
        raise NotFoundError("This image is not available (yet).")
    key = (str(path), path.stat().st_mtime)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    sitk = _sitk()
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    finite = array[np.isfinite(array)]
    lo, hi = (
        (float(np.percentile(finite, 1)), float(np.percentile(finite, 99)))
        if finite.size
        else (0.0, 1.0)
    )
    sp = image.GetSpacing()
    vol = LoadedVolume(array, (float(sp[0]), float(sp[1]), float(sp[2])), (lo, hi))
    with _cache_lock:
        _cache[key] = vol
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return vol


def shape_of(path: Path) -> tuple[int, int, int] | None:
    """(z, y, x) from the file header only, or None when the file is missing/unreadable."""
    if not path.is_file():
        return None
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    return int(size[2]), int(size[1]), int(size[0])


def take_slice(vol: LoadedVolume, axis: Axis, index: int) -> tuple[FloatArray, float]:
    """The 2-D slice (superior up for coronal/sagittal) and its row/column pixel aspect."""
    a = vol.array
    sx, sy, sz = vol.spacing
    n = {Axis.AXIAL: a.shape[0], Axis.CORONAL: a.shape[1], Axis.SAGITTAL: a.shape[2]}[axis]
    if not 0 <= index < n:
        raise BadRequestError(f"Slice {index} is outside 0…{n - 1} on the {axis.value} axis.")
    if axis is Axis.AXIAL:
        return a[index], sy / sx
    if axis is Axis.CORONAL:
        return a[::-1, index, :], sz / sx
    return a[::-1, :, index], sz / sy


def stretch_rows(img: npt.NDArray[np.uint8], aspect: float) -> npt.NDArray[np.uint8]:
    """Repeat rows so anisotropic voxels look right (nearest neighbour, capped)."""
    if abs(aspect - 1.0) < 0.05:
        return img
    rows = max(1, min(round(img.shape[0] * aspect), 4 * img.shape[0], 2048))
    idx = np.minimum((np.arange(rows) / rows * img.shape[0]).astype(int), img.shape[0] - 1)
    stretched: npt.NDArray[np.uint8] = img[idx]
    return stretched


def to_gray(slice2d: FloatArray, lo: float, hi: float) -> ByteArray:
    scaled = (np.nan_to_num(slice2d, nan=lo) - lo) / max(hi - lo, 1e-6)
    gray: ByteArray = (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return gray


def to_diverging(diff: FloatArray, limit: float = DIFF_RANGE) -> ByteArray:
    """Blue (sCT too low) — white (0) — red (sCT too high), as an RGB array."""
    t = np.clip(np.nan_to_num(diff) / limit, -1.0, 1.0)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    r = 255.0 * (1 - neg * 0.85)
    g = 255.0 * (1 - np.maximum(pos, neg) * 0.85)
    b = 255.0 * (1 - pos * 0.85)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def encode_png(pixels: ByteArray) -> bytes:
    """8-bit grayscale (h, w) or RGB (h, w, 3) to PNG bytes."""
    if pixels.ndim == 2:
        color_type, channels = 0, 1
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        color_type, channels = 2, 3
    else:
        raise ValueError("Expected a (h, w) or (h, w, 3) uint8 array.")
    h, w = pixels.shape[:2]
    raw = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(h, w * channels)
    # Filter type 0 (None) on every row.
    data = np.hstack([np.zeros((h, 1), np.uint8), raw]).tobytes()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(
            ">I", zlib.crc32(tag + body) & 0xFFFFFFFF
        )

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data, 6))
        + chunk(b"IEND", b"")
    )


def render_slice(
    kind: SliceKind,
    axis: Axis,
    index: int,
    *,
    input_path: Path | None = None,
    sct_path: Path | None = None,
    ct_path: Path | None = None,
) -> bytes:
    """PNG of one slice. ``input`` uses a robust per-volume window, ``sct``/``ct`` a fixed HU
    window, ``diff`` sCT − CT on a diverging map (±500 HU)."""
    if kind is SliceKind.INPUT:
        if input_path is None:
            raise NotFoundError("This case has no input image.")
        vol = load_volume(input_path)
        sl, aspect = take_slice(vol, axis, index)
        return encode_png(stretch_rows(to_gray(sl, *vol.window), aspect))
    if kind in (SliceKind.SCT, SliceKind.CT):
        path = sct_path if kind is SliceKind.SCT else ct_path
        if path is None:
            what = "synthetic CT" if kind is SliceKind.SCT else "reference CT"
            raise NotFoundError(f"The {what} of this case is not available.")
        vol = load_volume(path)
        sl, aspect = take_slice(vol, axis, index)
        return encode_png(stretch_rows(to_gray(sl, *CT_WINDOW), aspect))
    if sct_path is None or ct_path is None:
        raise NotFoundError("The difference needs both the synthetic and the reference CT.")
    sct, ct = load_volume(sct_path), load_volume(ct_path)
    if sct.array.shape != ct.array.shape:
        raise BadRequestError("The synthetic CT does not have the reference CT's size.")
    a, aspect = take_slice(sct, axis, index)
    b, _ = take_slice(ct, axis, index)
    return encode_png(stretch_rows(to_diverging(a - b), aspect))
