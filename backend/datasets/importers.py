"""Find SynthRAD-layout cases in a folder and copy them into the data roots.

2023: ``Task1/brain/1BA001/{mr,ct,mask}.nii.gz`` (Task2: ``cbct``); 2025: the same with
``.mha``. A case folder is any folder holding ``ct``, ``mask`` and ``mr`` or ``cbct``; the
region is its parent folder's name. Optional ``labels``/``segmentation`` images and
treatment plans (``plan_photon.json``/``plan_proton.json`` with the structure maps they name,
as ``evaluator.dose`` reads them; or a legacy ``plan.json``/``plan/``) go with the ground
truth. Inputs are written as ``.mha`` (the container contract); ground truth is copied as is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from backend.errors import BadRequestError
from backend.models import Modality

IMAGE_EXTS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
REGION_NAMES = {
    "hn": "Head and Neck",
    "head_neck": "Head and Neck",
    "headneck": "Head and Neck",
    "ab": "Abdomen",
    "abdomen": "Abdomen",
    "th": "Thorax",
    "thorax": "Thorax",
    "brain": "Brain",
    "pelvis": "Pelvis",
}
MODALITY_STEMS = {"mr": Modality.MRI, "mri": Modality.MRI, "cbct": Modality.CBCT}


@dataclass(frozen=True)
class FoundCase:
    name: str
    region: str
    modality: Modality
    input_image: Path
    mask: Path
    ct: Path
    labels: Path | None  # the phantoms' 3-class map (labels.*)
    plan: Path | None
    # Files the plans need beside them (e.g. the structure map a plan names), same names.
    plan_extras: tuple[Path, ...] = ()
    # SynthRAD2025's TotalSegmentator segmentation of the CT (segmentation.*); kept under its
    # own name beside the CT: scoring picks the map its segmenter compares with.
    segmentation: Path | None = None


def _stem(path: Path) -> str | None:
    return stem_of(path.name)


def stem_of(file_name: str) -> str | None:
    """``ct.nii.gz`` -> ``ct``; None for a file that is not an image."""
    name = file_name.lower()
    for ext in IMAGE_EXTS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def _images_in(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and (stem := _stem(p)) is not None:
            found.setdefault(stem, p)
    return found


def region_name(folder_name: str) -> str:
    return REGION_NAMES.get(folder_name.lower(), folder_name)


PLAN_FILES = ("plan_photon.json", "plan_proton.json", "plan.json", "plan")


def _plans_in(folder: Path) -> tuple[Path | None, tuple[Path, ...]]:
    """The case's main plan file and the other plan files and structure maps to copy with it."""
    plans = [folder / n for n in PLAN_FILES if (folder / n).exists()]
    if not plans:
        return None, ()
    extras: list[Path] = list(plans[1:])
    for plan in plans:
        if not plan.is_file():
            continue
        try:
            spec = json.loads(plan.read_text())
        except (OSError, ValueError) as exc:
            raise BadRequestError(f"{plan} is not valid JSON: {exc}") from exc
        name = spec.get("structure_file") if isinstance(spec, dict) else None
        if isinstance(name, str) and name:
            ref = (folder / name).resolve()
            if ref.parent != folder.resolve() or not ref.is_file():
                raise BadRequestError(
                    f"{plan} names the structure map '{name}', which is not a file beside it."
                )
            if ref not in extras and _stem(ref) not in ("ct", "labels", "segmentation"):
                extras.append(ref)
    return plans[0], tuple(extras)


def find_cases(root: Path) -> list[FoundCase]:
    if not root.is_dir():
        raise BadRequestError(f"{root} is not a folder on the server.")
    cases: list[FoundCase] = []
    for folder in sorted(p for p in [root, *root.rglob("*")] if p.is_dir()):
        images = _images_in(folder)
        modality_key = next((k for k in MODALITY_STEMS if k in images), None)
        if "ct" not in images or "mask" not in images or modality_key is None:
            continue
        region_file = folder / "region.json"
        region = (
            str(json.loads(region_file.read_text()))
            if region_file.is_file()
            else region_name(folder.parent.name)
        )
        plan, plan_extras = _plans_in(folder)
        cases.append(
            FoundCase(
                name=folder.name,
                region=region,
                modality=MODALITY_STEMS[modality_key],
                input_image=images[modality_key],
                mask=images["mask"],
                ct=images["ct"],
                labels=images.get("labels"),
                segmentation=images.get("segmentation"),
                plan=plan,
                plan_extras=plan_extras,
            )
        )
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadRequestError(f"Case names must be unique; repeated: {', '.join(duplicates)}.")
    if not cases:
        raise BadRequestError(
            f"No cases found under {root}. Expected SynthRAD folders such as "
            "Task1/brain/1BA001/{mr,ct,mask}.nii.gz or .mha files."
        )
    return cases


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()


def write_as_mha(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.name.lower().endswith(".mha"):
        shutil.copyfile(src, dest)
        return
    import SimpleITK as sitk  # noqa: N813 - the library's own convention

    sitk.WriteImage(sitk.ReadImage(str(src)), str(dest), True)


def copy_ground_truth(src: Path, dest_dir: Path, stem: str) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        dest = dest_dir / stem
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return dest
    dest = dest_dir / (stem + _suffix(src))
    shutil.copyfile(src, dest)
    return dest
