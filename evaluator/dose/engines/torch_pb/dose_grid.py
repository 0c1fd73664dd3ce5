"""The plan's dose grid, placed as pyRadPlan places it: the dose is computed on it and
interpolated trilinearly onto the CT grid; the optimiser's structures are resampled onto it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from evaluator.dose.engines.geometry import sample_volume


@dataclass
class DoseGrid:
    """pyRadPlan's dose grid: covers the CT, centred, ``res`` mm (origin = first voxel centre,
    in CT coordinates)."""

    shape: tuple[int, int, int]  # (nz, ny, nx)
    origin: np.ndarray  # (x, y, z) mm
    res: float

    @classmethod
    def for_ct(cls, ct_shape: Sequence[int], spacing: Sequence[float], res: float) -> DoseGrid:
        n = np.array(ct_shape[::-1], dtype=np.float64)  # x, y, z
        s = np.asarray(spacing, dtype=np.float64)
        dims = np.ceil(n * s / res - 1e-9).astype(int)
        origin = -(dims * res - n * s) / 2.0
        return cls((int(dims[2]), int(dims[1]), int(dims[0])), origin, float(res))

    def interpolation(self, axis: int, n_ct: int, spacing: float, device: torch.device,
                      dtype: torch.dtype) -> torch.Tensor:
        """(n_ct, n_dose) linear interpolation matrix along ``axis`` (0 x, 1 y, 2 z); CT
        positions beyond the outer dose voxel centres take the edge value."""
        n_dose = self.shape[2 - axis]
        q = (np.arange(n_ct) * spacing - self.origin[axis]) / self.res
        q = np.clip(q, 0.0, n_dose - 1.0)
        lo = np.minimum(np.floor(q).astype(int), max(n_dose - 2, 0))
        f = q - lo
        m = np.zeros((n_ct, n_dose))
        m[np.arange(n_ct), lo] += 1 - f
        if n_dose > 1:
            m[np.arange(n_ct), lo + 1] += f
        return torch.as_tensor(m, dtype=dtype, device=device)

    def nearest_labels(self, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """The CT's label map (z, y, x) resampled nearest-neighbour onto this grid (0
        outside the CT), as pyRadPlan resamples structures onto its dose grid."""
        idx = []
        for axis in range(3):  # x, y, z
            q = np.rint((self.origin[axis] + np.arange(self.shape[2 - axis]) * self.res)
                        / float(spacing[axis])).astype(np.int64)
            idx.append(q)
        n_ct = labels.shape[::-1]
        ok = [(q >= 0) & (q < n) for q, n in zip(idx, n_ct, strict=True)]
        clipped = [np.clip(q, 0, n - 1) for q, n in zip(idx, n_ct, strict=True)]
        out = labels[np.ix_(clipped[2], clipped[1], clipped[0])]
        inside = ok[2][:, None, None] & ok[1][None, :, None] & ok[0][None, None, :]
        return np.where(inside, out, 0)

    def resample(self, volume: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
        """A CT-grid volume (z, y, x) sampled trilinearly at this grid's voxel centres (0
        outside the CT), as pyRadPlan resamples its water-equivalent density cube before
        tracing rays on the dose grid."""
        axes = [torch.as_tensor(self.origin[a] + np.arange(self.shape[2 - a]) * self.res,
                                dtype=volume.dtype, device=volume.device) for a in range(3)]
        zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return sample_volume(volume, torch.stack([xx, yy, zz], dim=-1), spacing, fill=0.0)

    def points(self, index: np.ndarray) -> np.ndarray:
        """(M, 3) patient coordinates (x, y, z mm) of flat dose-grid indices."""
        k, j, i = np.unravel_index(index, self.shape)
        return np.asarray(np.stack([i, j, k], axis=1) * self.res + self.origin)
