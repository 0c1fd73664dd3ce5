"""The NIfTI steps around TotalSegmentator's network, as the SynthRAD2025 evaluation runs them.

SynthRAD2025/evaluation (``ts_utils.py``) imports ``change_spacing`` and ``undo_canonical``
from the TotalSegmentator commit it pins (704282a, September 2024). Later TotalSegmentator
releases changed ``change_spacing`` (``mode="nearest"`` in the zoom), which moves border
voxels, so the pinned behaviour is written out here: scipy's ``ndimage.zoom`` with its default
boundary mode, the affine's columns scaled by the zoom, the image returned unchanged when the
spacing already matches.
"""

from __future__ import annotations

from typing import Any

import nibabel
import numpy as np
from scipy import ndimage

nib: Any = nibabel  # nibabel has no type hints


def change_spacing(
    img: Any,
    new_spacing: float,
    target_shape: tuple[int, ...] | None = None,
    order: int = 0,
    dtype: type | None = None,
    force_affine: np.ndarray[Any, Any] | None = None,
) -> Any:
    """``img`` (a nibabel image) resampled to ``new_spacing`` mm, or to exactly
    ``target_shape`` (the spacing then follows from the zoom)."""
    data = img.get_fdata()
    old_shape = np.array(data.shape)
    img_spacing = np.array(img.header.get_zooms())[:3]
    spacing = np.array([new_spacing] * 3, dtype=float)
    if target_shape is not None:
        zoom = np.array(target_shape) / old_shape
        spacing = img_spacing / zoom
    else:
        zoom = img_spacing / spacing
    if np.array_equal(img_spacing, spacing):
        return img  # unchanged: no resampling, no dtype conversion (as pinned)
    affine = np.copy(img.affine)
    for axis in range(3):
        affine[:3, axis] = affine[:3, axis] / zoom[axis]
    new_data = ndimage.zoom(data, zoom, order=order)
    if dtype is not None:
        new_data = new_data.astype(dtype)
    return nib.Nifti1Image(new_data, affine if force_affine is None else force_affine)


def undo_canonical(img_can: Any, img_orig: Any) -> Any:
    """Inverse of ``nib.as_closest_canonical`` for an image on the canonical grid."""
    ornt = nib.orientations
    from_canonical = ornt.ornt_transform(ornt.axcodes2ornt("RAS"),
                                         ornt.io_orientation(img_orig.affine))
    return img_can.as_reoriented(from_canonical)
