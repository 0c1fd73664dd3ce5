"""TotalSegmentator as SynthRAD2025 runs it: task 'total', the 3 mm fast model, CPU, no mirroring.

The steps of SynthRAD2025/evaluation's ``MinialTotalSegmentator.score_patient`` (``ts_utils.py``):
the sCT, carrying the CT's geometry, is written to NIfTI by SimpleITK and read by nibabel,
reoriented to the closest canonical (RAS) grid, resampled to 3 mm (cubic, values cast to int32),
segmented by nnU-Net v2 (sliding window, step 0.5, Gaussian weighting, no test-time mirroring,
on the CPU, fold 0 of ``Dataset297_TotalSegmentator_total_3mm_1559subj``), resampled back
(nearest) and reoriented to the input grid. nnU-Net's own predictor runs the network part
(nnunetv2 2.5.1, the version the official image pins); nothing here downloads anything: the
weights must lie in the configured directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813

from evaluator.io import Volume
from evaluator.segmentation.base import LabelArray, SegmenterUnavailableError

DATASET = "Dataset297_TotalSegmentator_total_3mm_1559subj"
TRAINER = "nnUNetTrainer_4000epochs_NoMirroring"
MODEL = f"{TRAINER}__nnUNetPlans__3d_fullres"
FOLD, CHECKPOINT = 0, "checkpoint_final.pth"
SPACING_MM = 3.0
MODEL_FILES = ("dataset.json", "plans.json", f"fold_{FOLD}/{CHECKPOINT}")
WEIGHTS_HINT = (
    "Download TotalSegmentator's 'total' fast model (Dataset297_TotalSegmentator_total_3mm_"
    "1559subj, TotalSegmentator v2.0.0 weights; licensed separately) on a machine with network "
    "access, unpack it into <dir>/nnunet/results/ and set SYNTHARENA_TOTALSEG_WEIGHTS_DIR=<dir> "
    "(see README, 'TotalSegmentator weights')."
)


def model_dir(weights_dir: str | Path | None) -> Path:
    """The model folder (``.../<DATASET>/<MODEL>``) under ``weights_dir``: a TotalSegmentator
    home (``<dir>/nnunet/results/<DATASET>``) or an nnU-Net results folder (``<dir>/<DATASET>``).

    Raises SegmenterUnavailableError saying what is missing.
    """
    if not weights_dir:
        raise SegmenterUnavailableError(
            "TotalSegmentator weights are not configured (SYNTHARENA_TOTALSEG_WEIGHTS_DIR is "
            f"empty). {WEIGHTS_HINT}")
    root = Path(weights_dir)
    candidates = [root / "nnunet" / "results" / DATASET / MODEL, root / DATASET / MODEL]
    for candidate in candidates:
        if all((candidate / f).is_file() for f in MODEL_FILES):
            return candidate
    found = next((c for c in candidates if c.is_dir()), candidates[0])
    missing = [f for f in MODEL_FILES if not (found / f).is_file()]
    raise SegmenterUnavailableError(
        f"TotalSegmentator weights not found: {found} lacks {', '.join(missing)}. "
        f"{WEIGHTS_HINT}")


def weights_problem(weights_dir: str | Path | None) -> str | None:
    """Why the weights under ``weights_dir`` cannot be used, or None when they can."""
    try:
        model_dir(weights_dir)
    except SegmenterUnavailableError as exc:
        return str(exc)
    return None


_PREDICTORS: dict[Path, Any] = {}
_FINGERPRINTS: dict[tuple[Path, Any], str] = {}
_LOAD_LOCK = threading.Lock()


def _predictor(folder: Path) -> Any:
    """nnU-Net's predictor for ``folder``, loaded once per process."""
    with _LOAD_LOCK:
        if folder in _PREDICTORS:
            return _PREDICTORS[folder]
        try:
            import torch
            # nnunetv2 reads these at import and prints a warning per missing one.
            for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
                os.environ.setdefault(var, str(folder.parent.parent))
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        except ImportError as exc:
            raise SegmenterUnavailableError(
                "nnU-Net v2 is not installed: pip install 'syntharena[segmentation]'") from exc
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # nnU-Net prints its setup steps, and warns about the published weights' plans
            # (the old format, which it converts).
            warnings.filterwarnings("ignore", message="Detected old nnU-Net plans format")
            predictor = nnUNetPredictor(
                tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                perform_everything_on_device=False, device=torch.device("cpu"),
                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
            # nnU-Net checkpoints hold numpy scalars; torch >= 2.6 loads weights only unless
            # these are allowed (the official code allows the same ones).
            with torch.serialization.safe_globals(_numpy_globals()):
                predictor.initialize_from_trained_model_folder(
                    str(folder), use_folds=(FOLD,), checkpoint_name=CHECKPOINT)
        _PREDICTORS[folder] = predictor
        return predictor


def _numpy_globals() -> list[Any]:
    from numpy._core.multiarray import scalar

    return [scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType]


class TotalSegmentatorSegmenter:
    """TotalSegmentator 'total' (3 mm fast model) on the CPU, the SynthRAD2025 settings.

    ``segment`` expects the sCT already carrying the CT's geometry (see
    :func:`evaluator.scoring.score_case`); it returns TotalSegmentator label ids in (z, y, x).
    """

    name = "totalsegmentator"
    label = "TotalSegmentator 'total' 3 mm (SynthRAD2025)"

    def __init__(self, weights_dir: str | Path | None) -> None:
        self.weights_dir = weights_dir

    def check(self) -> Path:
        """The model folder; raises SegmenterUnavailableError when the weights are missing."""
        return model_dir(self.weights_dir)

    def fingerprint(self) -> str:
        """Identifies the model (hash of its files, computed once per process and file
        version): cached segmentations are per model."""
        folder = self.check()
        stats = tuple((f, (folder / f).stat().st_size, (folder / f).stat().st_mtime_ns)
                      for f in MODEL_FILES)
        key = (folder, stats)
        if key not in _FINGERPRINTS:
            digest = hashlib.sha256()
            for name in MODEL_FILES:
                with (folder / name).open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            _FINGERPRINTS[key] = digest.hexdigest()[:16]
        return _FINGERPRINTS[key]

    def segment(self, ct: Volume, mask: Volume | None = None) -> LabelArray:
        import torch

        from evaluator.segmentation.resample import change_spacing, nib, undo_canonical

        predictor = _predictor(self.check())
        with tempfile.TemporaryDirectory(prefix="syntharena-ts-") as tmp:
            # SimpleITK writes the NIfTI (its affine, in float32) exactly as the official
            # code's conversion does; nibabel then reads it back.
            image: Any = sitk.GetImageFromArray(np.ascontiguousarray(ct.array))
            image.SetSpacing(ct.spacing)
            image.SetOrigin(ct.origin)
            image.SetDirection(ct.direction)
            path = Path(tmp) / "sct.nii"
            sitk.WriteImage(image, str(path))
            orig = nib.load(path)
            img = nib.as_closest_canonical(nib.Nifti1Image(orig.get_fdata(), orig.affine))
            shape = img.shape
            rsp = change_spacing(img, SPACING_MM, order=3, dtype=np.int32)
            with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
                seg = predictor.predict_single_npy_array(
                    rsp.get_fdata().T[np.newaxis], {"spacing": [SPACING_MM] * 3})
            pred = nib.Nifti1Image(np.asarray(seg).T, rsp.affine)
            pred = change_spacing(pred, SPACING_MM, target_shape=shape, order=0,
                                  dtype=np.uint8, force_affine=img.affine)
            labels = undo_canonical(pred, orig).get_fdata().astype(np.uint8)
        # nibabel's (i, j, k) is SimpleITK's (x, y, z): back to (z, y, x).
        out: LabelArray = np.ascontiguousarray(labels.transpose(2, 1, 0))
        return out
