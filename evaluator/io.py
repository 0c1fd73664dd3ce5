"""Reading, writing and checking volumes (SimpleITK).

Arrays are numpy in (z, y, x) order, as SimpleITK's ``GetArrayFromImage`` returns them;
``spacing``/``origin`` are in SimpleITK's (x, y, z) order and ``direction`` is the
row-major 3x3 matrix, also as SimpleITK reports it.

:func:`read_volumes` with ``direct=True`` reads uncompressed MetaImage (.mha) files itself
(the header SimpleITK writes) and leaves every other file to SimpleITK, whose import alone
costs ~0.2 CPU s of a one-shot command; tests compare both readers. Compressed files stay
with SimpleITK: its inflate (zlib-ng) measured ~1.5x faster than Python's zlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.errors import EvaluationInputError

SUPPORTED_SUFFIXES = (".mha", ".mhd", ".nii", ".nii.gz", ".nrrd")
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# Geometry tolerances: spacing/origin in mm (absolute), direction cosines (absolute).
GEOMETRY_ATOL_MM = 1e-3
DIRECTION_ATOL = 1e-4


@dataclass(frozen=True)
class Volume:
    """A 3-D image: ``array`` in (z, y, x) order plus its physical geometry."""

    array: np.ndarray[Any, Any]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    path: Path | None = field(default=None, compare=False)
    # The SimpleITK image whose buffer ``array`` views (read_volume(copy=False)): kept
    # alive with the Volume, since the view does not hold a reference to it.
    owner: Any = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> tuple[int, int, int]:
        """Size in SimpleITK's (x, y, z) order, as users see it in viewers."""
        z, y, x = self.array.shape
        return (int(x), int(y), int(z))

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<in-memory volume>"


def _has_supported_suffix(path: Path) -> bool:
    return any(path.name.lower().endswith(s) for s in SUPPORTED_SUFFIXES)


def read_volume(path: str | Path, copy: bool = True) -> Volume:
    """Read a 3-D scalar image; raise EvaluationInputError with the file name if unusable.

    ``copy=False``: ``array`` is a read-only view of SimpleITK's buffer (no second copy of
    the voxels: for a 96x384x384 float32 image that copy costs about as much as reading an
    uncompressed file).
    """
    p = Path(path)
    if not p.is_file():
        raise EvaluationInputError(f"{p}: file not found")
    if not _has_supported_suffix(p):
        raise EvaluationInputError(
            f"{p}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})"
        )
    import SimpleITK as sitk  # noqa: N813 - imported when needed (~0.2 s)

    try:
        image: Any = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise EvaluationInputError(f"{p}: cannot be read as an image ({first})") from exc
    if image.GetDimension() != 3:
        raise EvaluationInputError(f"{p}: expected a 3-D image, got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EvaluationInputError(
            f"{p}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel"
        )
    array = sitk.GetArrayFromImage(image) if copy else sitk.GetArrayViewFromImage(image)
    sx, sy, sz = (float(v) for v in image.GetSpacing())
    ox, oy, oz = (float(v) for v in image.GetOrigin())
    return Volume(
        array=array,
        spacing=(sx, sy, sz),
        origin=(ox, oy, oz),
        direction=tuple(float(v) for v in image.GetDirection()),
        path=p,
        owner=None if copy else image,
    )


def read_volumes(paths: Sequence[str | Path], copy: bool = True,
                 direct: bool = False) -> list[Volume]:
    """:func:`read_volume` of several files at once, in threads: SimpleITK releases the GIL
    while it reads and decompresses, so compressed files decode in parallel. ``direct``:
    uncompressed .mha files are read by :func:`read_mha` (the same arrays and geometry; no
    SimpleITK), one after the other (a copy from the page cache: in threads it measured
    several times slower on a busy machine)."""
    done = [read_mha(p) if direct else None for p in paths]
    rest = [p for p, v in zip(paths, done, strict=True) if v is None]
    if len(rest) < 2:
        more = iter([read_volume(p, copy) for p in rest])
    else:
        with ThreadPoolExecutor(max_workers=len(rest)) as pool:
            more = iter(list(pool.map(lambda p: read_volume(p, copy), rest)))
    return [v if v is not None else next(more) for v in done]


# MetaImage element types read directly (the others go to SimpleITK)
_MET_TYPES = {"MET_UCHAR": "u1", "MET_CHAR": "i1", "MET_USHORT": "u2", "MET_SHORT": "i2",
              "MET_UINT": "u4", "MET_INT": "i4", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}
# header keys of a plain 3-D image (as SimpleITK/ITK write it); any other key: SimpleITK
_MET_KEYS = {"ObjectType", "NDims", "BinaryData", "BinaryDataByteOrderMSB",
             "ElementByteOrderMSB", "CompressedData", "CompressedDataSize", "TransformMatrix",
             "Offset", "CenterOfRotation", "AnatomicalOrientation", "ElementSpacing",
             "DimSize", "ElementType", "ElementNumberOfChannels", "ElementDataFile"}


def read_mha(path: str | Path) -> Volume | None:
    """An uncompressed MetaImage file read without SimpleITK, or None where SimpleITK must
    read it (another format, compressed data, data in another file, another header key or
    element type, or anything inconsistent: SimpleITK then also gives the error message).

    Same array (dtype, values, (z, y, x) order) and geometry as :func:`read_volume`:
    ``TransformMatrix`` is the direction stored column by column, ``Offset`` the origin.
    The array is read-only, like ``read_volume(copy=False)``'s.
    """
    p = Path(path)
    if p.suffix.lower() != ".mha" or not p.is_file():
        return None
    fields: dict[str, str] = {}
    with p.open("rb") as f:
        for _ in range(len(_MET_KEYS) + 1):
            line = f.readline(4096)
            key, sep, value = line.decode("latin-1").partition("=")
            key = key.strip()
            if not sep or key not in _MET_KEYS:
                return None
            fields[key] = value.strip()
            if key == "ElementDataFile":
                break
        else:
            return None
        try:
            return _mha_volume(p, f, fields)
        except (KeyError, ValueError, OverflowError):
            return None


def _mha_volume(p: Path, f: Any, fields: dict[str, str]) -> Volume | None:
    def numbers(key: str, n: int) -> list[float]:
        values = [float(v) for v in fields[key].split()]
        if len(values) != n or not all(math.isfinite(v) for v in values):
            raise ValueError(key)
        return values

    msb = fields.get("BinaryDataByteOrderMSB", fields.get("ElementByteOrderMSB", "False"))
    if (fields.get("ObjectType") != "Image" or fields.get("NDims") != "3"
            or fields.get("BinaryData", "True") != "True"
            or fields.get("ElementNumberOfChannels", "1") != "1"
            or fields["ElementDataFile"] != "LOCAL" or msb not in ("True", "False")
            or fields.get("CompressedData", "False") != "False"
            or fields.get("ElementType") not in _MET_TYPES):
        return None
    size = [int(v) for v in fields["DimSize"].split()]
    if len(size) != 3 or min(size) < 1:
        return None
    spacing, origin = numbers("ElementSpacing", 3), numbers("Offset", 3)
    m = numbers("TransformMatrix", 9)
    direction = tuple(m[3 * j + i] for i in range(3) for j in range(3))
    dtype = np.dtype(_MET_TYPES[fields["ElementType"]]).newbyteorder(
        ">" if msb == "True" else "<")
    array = np.empty(math.prod(size), dtype)
    if f.readinto(array.data.cast("B")) != math.prod(size) * dtype.itemsize:
        return None
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    array = array.reshape(size[::-1])
    array.flags.writeable = False
    return Volume(array=array, spacing=(spacing[0], spacing[1], spacing[2]),
                  origin=(origin[0], origin[1], origin[2]), direction=direction, path=p)


def write_volume(
    path: str | Path,
    array: np.ndarray[Any, Any],
    *,
    spacing: tuple[float, float, float] | None = None,
    origin: tuple[float, float, float] | None = None,
    direction: tuple[float, ...] | None = None,
    like: Volume | None = None,
    compress: bool = True,
) -> Path:
    """Write ``array`` (z, y, x) with the given geometry (or the geometry of ``like``)."""
    import SimpleITK as sitk  # noqa: N813

    p = Path(path)
    if array.ndim != 3:
        raise ValueError(f"write_volume expects a 3-D array, got shape {array.shape}")
    image: Any = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing or (like.spacing if like else (1.0, 1.0, 1.0)))
    image.SetOrigin(origin or (like.origin if like else (0.0, 0.0, 0.0)))
    image.SetDirection(direction or (like.direction if like else IDENTITY_DIRECTION))
    p.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(p), compress)
    return p


def _fmt(values: tuple[float, ...] | tuple[int, ...]) -> str:
    return "(" + ", ".join(repr(round(v, 6)) if isinstance(v, float) else str(v)
                           for v in values) + ")"


def check_geometry(ref: Volume, other: Volume, *, ref_name: str, other_name: str) -> None:
    """Size, spacing, origin and direction of ``other`` must match ``ref``."""
    where = f" ({other.name})"
    if other.size != ref.size:
        raise EvaluationInputError(
            f"{other_name} size {_fmt(other.size)} differs from {ref_name} size "
            f"{_fmt(ref.size)}{where}"
        )
    checks: list[tuple[str, tuple[float, ...], tuple[float, ...], float]] = [
        ("spacing", other.spacing, ref.spacing, GEOMETRY_ATOL_MM),
        ("origin", other.origin, ref.origin, GEOMETRY_ATOL_MM),
        ("direction", other.direction, ref.direction, DIRECTION_ATOL),
    ]
    for what, got, want, atol in checks:
        if len(got) != len(want) or not np.allclose(got, want, rtol=0.0, atol=atol):
            raise EvaluationInputError(
                f"{other_name} {what} {_fmt(got)} differs from {ref_name} {what} "
                f"{_fmt(want)}{where}"
            )


def check_finite(volume: Volume, *, name: str) -> None:
    array = volume.array
    if np.issubdtype(array.dtype, np.floating):
        # a sum of finite values is finite or overflows: count (with a boolean copy of the
        # volume) only when the sum is not finite, which is rare and 2-3x slower
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.add.reduce(array, axis=None)):
                return
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise EvaluationInputError(
                f"{name} contains {bad} non-finite voxel value(s) (NaN or infinity) "
                f"({volume.name})"
            )
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise EvaluationInputError(
            f"{name} has unsupported voxel type {array.dtype} ({volume.name})"
        )


def check_pair(
    ct: Volume,
    sct: Volume,
    mask: Volume | None = None,
    *,
    ct_name: str = "CT",
    sct_name: str = "sCT",
    mask_name: str = "mask",
) -> None:
    """Everything that must hold before a synthetic CT can be scored against its CT.

    Raises EvaluationInputError with one clear message on the first failure.
    """
    check_geometry(ct, sct, ref_name=ct_name, other_name=sct_name)
    check_finite(ct, name=ct_name)
    check_finite(sct, name=sct_name)
    if mask is not None:
        check_geometry(ct, mask, ref_name=ct_name, other_name=mask_name)
        check_finite(mask, name=mask_name)
        array = mask.array
        # unsigned: any nonzero voxel, without a boolean copy of the volume
        unsigned = array.dtype == np.bool_ or np.issubdtype(array.dtype, np.unsignedinteger)
        if not (array.any() if unsigned else np.any(array > 0)):
            raise EvaluationInputError(f"{mask_name} is empty (no voxel > 0) ({mask.name})")
