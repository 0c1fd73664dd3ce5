"""Inputs in the grand-challenge/SynthRAD layout, and checks of what a container wrote.

Layout of one run's ``/input`` (one case, or N in batch mode)::

    images/<modality>/<case>.mha   MR or CBCT, uncompressed MetaImage
    images/body/<case>.mha         body mask
    region.json                    "Head and Neck" (JSON string; a batch's cases share one
                                   region: the pipeline never batches regions together)
    inputs.json                    grand-challenge's list of socket values (slug, relative_path…)

The platform always provisions *uncompressed* ``.mha`` (converted once and cached when the
dataset's file is compressed), so minimal readers (e.g. the static C example) work. Only
input files are provisioned; ground truth never enters this directory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813

OUTPUT_SUBDIR = Path("images") / "synthetic-ct"
GEOMETRY_TOL = 1e-4


class OutputError(Exception):
    """The container's output for a case is unusable; the message tells the participant why."""


@dataclass(frozen=True)
class CaseInput:
    name: str  # e.g. "1BA001"; the file name is <name>.mha
    modality: str  # "mri" | "cbct"
    region: str
    image_path: Path  # absolute, under settings.inputs_dir
    mask_path: Path


def _is_compressed_mha(path: Path) -> bool:
    with path.open("rb") as fh:
        for raw in fh:
            line = raw.decode("latin-1").strip()
            if line.startswith("CompressedData"):
                return line.split("=", 1)[1].strip() == "True"
            if line.startswith("ElementDataFile"):
                return False
    return False


def uncompressed(path: Path, cache_dir: Path) -> Path:
    """``path`` itself when it is an uncompressed .mha, else a cached uncompressed copy."""
    if path.suffix == ".mha" and not _is_compressed_mha(path):
        return path
    target = cache_dir / f"{_cache_name(path)}.mha"
    if target.exists():
        with contextlib.suppress(OSError):  # recently used: what the object cache evicts last
            os.utime(target)
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}.mha")
        image: Any = sitk.ReadImage(str(path))
        try:
            sitk.WriteImage(image, str(tmp), useCompression=False)
            tmp.replace(target)
        except (RuntimeError, OSError) as exc:
            tmp.unlink(missing_ok=True)  # no partial file: a later run converts again
            # SimpleITK says only that the write failed: name the cause when it is space.
            needed = image.GetNumberOfPixels() * image.GetSizeOfPixelComponent() \
                * image.GetNumberOfComponentsPerPixel()
            if isinstance(exc, RuntimeError) and shutil.disk_usage(cache_dir).free < needed:
                raise OSError(errno.ENOSPC, f"No space left on device for the {needed}-byte "
                              f"uncompressed copy of {path.name}", str(cache_dir)) from exc
            raise
    return target


_CONTENT_NAMED = re.compile(r"[0-9a-f]{64}(\.[A-Za-z0-9]+)*")


def _cache_name(path: Path) -> str:
    """The uncompressed copy's name: a file named by the sha256 of its bytes (the object
    cache's blobs, whose times change on every use) by that name; any other by its path, size
    and time. hashlib, not hash(): every worker child must find the same name."""
    if _CONTENT_NAMED.fullmatch(path.name):
        return path.name.split(".", 1)[0]
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
                          ).hexdigest()[:40]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    # World-readable: the container runs as an unprivileged uid.
    if dst.stat().st_mode & 0o444 != 0o444:
        dst.chmod(0o644)


def provision_inputs(input_dir: Path, cases: list[CaseInput], cache_dir: Path) -> None:
    """Fill ``input_dir`` for these cases (hard links into a cache of uncompressed files)."""
    for case in cases:
        mod_dir = input_dir / "images" / case.modality
        body_dir = input_dir / "images" / "body"
        mod_dir.mkdir(parents=True, exist_ok=True)
        body_dir.mkdir(parents=True, exist_ok=True)
        _link_or_copy(uncompressed(case.image_path, cache_dir), mod_dir / f"{case.name}.mha")
        _link_or_copy(uncompressed(case.mask_path, cache_dir), body_dir / f"{case.name}.mha")
    region = cases[0].region if cases else ""
    (input_dir / "region.json").write_text(json.dumps(region))
    (input_dir / "inputs.json").write_text(json.dumps(gc_inputs(cases), indent=1))
    for d in [input_dir, *[p for p in input_dir.rglob("*") if p.is_dir()]]:
        d.chmod(0o755)
    for f in (input_dir / "region.json", input_dir / "inputs.json"):
        f.chmod(0o644)


# Grand-challenge sockets of a SynthRAD phase: (slug, title, kind, super kind, relative path).
_SOCKETS = {
    "mri": ("mri", "MRI", "Image", "Image", "images/mri"),
    "cbct": ("cbct", "CBCT", "Image", "Image", "images/cbct"),
    "body": ("body", "Body", "Segmentation", "Image", "images/body"),
    "region": ("region", "Region", "String", "Value", "region.json"),
}


def _socket(key: str) -> dict[str, Any]:
    slug, title, kind, super_kind, path = _SOCKETS[key]
    return {"title": title, "description": "", "slug": slug, "kind": kind,
            "pk": list(_SOCKETS).index(key) + 1, "default_value": None,
            "super_kind": super_kind, "relative_path": path, "overlay_segments": [],
            "look_up_table": None}


def gc_inputs(cases: list[CaseInput]) -> list[dict[str, Any]]:
    """``/input/inputs.json`` as grand-challenge writes it: one socket value per input, each
    with ``socket`` (and the legacy ``interface``: slug, kind, relative_path, ...) and its
    ``value`` (JSON inputs) or ``image`` (pk, file name). A batch lists every case's values."""
    values: list[dict[str, Any]] = []
    for case in cases:
        for key, image in ((case.modality, True), ("body", True), ("region", False)):
            sock = _socket(key)
            values.append({
                "socket": sock, "interface": sock,
                "value": None if image else case.region, "file": None,
                "image": {"pk": f"{case.name}-{key}", "name": f"{case.name}.mha"}
                if image else None,
                "pk": len(values) + 1,
            })
    return values


def _geometry(img: Any) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...],
                                 tuple[float, ...]]:
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=GEOMETRY_TOL, abs_tol=GEOMETRY_TOL)
                                    for x, y in zip(a, b, strict=True))


IMAGE_SUFFIXES = (".mha", ".nii", ".nii.gz")


def find_outputs(output_dir: Path, expected: Sequence[str] = ()) -> dict[str, list[Path]]:
    """Output files by case name (file name without .mha / .nii.gz).

    With one ``expected`` case (batch size 1) the output folder's image files are that case's
    whatever their names, as on grand-challenge (e.g. ``synthetic-ct/output.mha``)."""
    found = _outputs_by_name(output_dir)
    if len(expected) == 1 and expected[0] not in found:
        unnamed = [p for files in found.values() for p in files
                   if p.name.endswith(IMAGE_SUFFIXES)]
        return {expected[0]: unnamed} if unnamed else found
    return found


def _outputs_by_name(output_dir: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    sct_dir = output_dir / OUTPUT_SUBDIR
    # Never follow a link the container made: a linked images/ or synthetic-ct/ folder would
    # point the platform at files outside /output (e.g. the run's own inputs).
    if any(p.is_symlink() for p in (output_dir / OUTPUT_SUBDIR.parts[0], sct_dir)):
        return found
    if not sct_dir.is_dir():
        return found
    for p in sorted(sct_dir.iterdir()):
        if p.is_symlink() or not p.is_file():
            continue  # never follow links a container made
        stem = p.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".mha")
        found.setdefault(stem, []).append(p)
    return found


@dataclass(frozen=True)
class CheckedOutput:
    path: Path  # the file the container wrote
    # Under the 'impose' geometry policy, when the geometry differed: the sCT with the input's
    # geometry (to be stored instead of ``path``) and the warning the case carries.
    imposed: Any = None
    warning: str = ""


def check_output(case: CaseInput, files: list[Path], batch: bool, *,
                 impose_geometry: bool = False) -> CheckedOutput:
    """The one sCT of ``case``, checked (readable, the input's size, finite). Its spacing,
    origin and direction must be the input's too, unless ``impose_geometry`` (the phase's
    'impose' policy, SynthRAD's official behaviour): then the input's are imposed and the
    result says so."""
    where = f"/output/{OUTPUT_SUBDIR}/{case.name}.mha"
    if not files:
        hint = " (in batch mode, one file per input, named like the input)" if batch else ""
        raise OutputError(
            f"No synthetic CT was written for case {case.name}: expected {where}{hint}."
        )
    if len(files) > 1 and not batch:
        names = ", ".join(p.name for p in files)
        raise OutputError(f"Expected exactly one synthetic CT in /output/{OUTPUT_SUBDIR}, found "
                          f"{len(files)} ({names}).")
    if len(files) > 1:
        raise OutputError(f"Case {case.name} has {len(files)} outputs; write exactly {where}.")
    path = files[0]
    _check_self_contained(path)
    reader: Any = sitk.ImageFileReader()  # type: ignore[no-untyped-call]
    reader.SetFileName(str(path))
    try:
        # The header first: a file claiming a huge volume is refused before it is allocated.
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise OutputError(
            f"The synthetic CT {path.name} could not be read as an image ({str(exc)[:200]})."
        ) from exc
    ref: Any = sitk.ReadImage(str(case.image_path))
    if tuple(reader.GetSize()) != tuple(ref.GetSize()):
        raise OutputError(
            f"The synthetic CT {path.name} has size {_fmt(reader.GetSize())} but the input has "
            f"{_fmt(ref.GetSize())}; copy the input's geometry (e.g. sct.CopyInformation(input))."
        )
    try:
        sct: Any = reader.Execute()
    except RuntimeError as exc:
        raise OutputError(
            f"The synthetic CT {path.name} could not be read as an image ({str(exc)[:200]})."
        ) from exc
    if sct.GetNumberOfComponentsPerPixel() != 1:
        raise OutputError(f"The synthetic CT {path.name} must have one channel (HU values).")
    _, s_sp, s_org, s_dir = _geometry(sct)
    _, r_sp, r_org, r_dir = _geometry(ref)
    differs = [(what, got, want) for what, got, want in (
        ("spacing", s_sp, r_sp), ("origin", s_org, r_org), ("direction", s_dir, r_dir))
        if not _close(got, want)]
    if differs and not impose_geometry:
        what, got, want = differs[0]
        raise OutputError(
            f"The synthetic CT {path.name} has {what} {_fmt(got)} but the input has "
            f"{_fmt(want)}; copy the input's geometry (e.g. sct.CopyInformation(input))."
        )
    values = sitk.GetArrayViewFromImage(sct)
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise OutputError(
            f"The synthetic CT {path.name} has {bad} non-finite values (NaN or inf); "
            "every voxel must be a finite HU value."
        )
    if not differs:
        return CheckedOutput(path)
    sct.CopyInformation(ref)
    found = "; ".join(f"{what} {_fmt(got)} (input: {_fmt(want)})" for what, got, want in differs)
    return CheckedOutput(path, sct, (
        f"The synthetic CT {path.name} had {found}; the input's geometry was imposed on it, as "
        "this phase's geometry policy ('impose', SynthRAD's official evaluation) says. Copy the "
        "input's geometry (e.g. sct.CopyInformation(input)) so the scores do not depend on it."))


def store_output(checked: CheckedOutput, scratch: Path) -> Path:
    """The file to store for the checked sCT: the container's own, or (the input's geometry
    imposed) the image written to ``scratch``. Raises OSError (ENOSPC on a full disk) for
    write failures."""
    if checked.imposed is None:
        return checked.path
    try:
        sitk.WriteImage(checked.imposed, str(scratch), useCompression=True)
    except RuntimeError as exc:  # SimpleITK's write errors
        full = shutil.disk_usage(scratch.parent).free < 1 << 20
        raise OSError(errno.ENOSPC if full else errno.EIO, str(exc)[:200]) from exc
    return scratch


def _check_self_contained(path: Path) -> None:
    """A MetaImage header may name another file for its voxels (``ElementDataFile = /dev/zero``
    or a path relative to /output on the host): only ``LOCAL`` (data in the same file) is read."""
    with path.open("rb") as fh:
        head = fh.read(64 * 1024)
    for raw in head.split(b"\n"):
        key, sep, value = raw.partition(b"=")
        if sep and key.strip() == b"ElementDataFile":
            if value.strip() != b"LOCAL":
                raise OutputError(
                    f"The synthetic CT {path.name} keeps its voxels in another file "
                    f"(ElementDataFile = {value.strip()[:80].decode('latin-1')}); write a "
                    "single-file .mha (ElementDataFile = LOCAL) or .nii.gz."
                )
            return


def _fmt(v: tuple[float, ...] | tuple[int, ...]) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"
