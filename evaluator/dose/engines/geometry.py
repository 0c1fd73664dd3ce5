"""Beam's-eye-view (BEV) geometry shared by the own pencil-beam engines.

Patient coordinates are (x, y, z) mm from the centre of the first CT voxel along the image
axes (LPS for a head-first-supine DICOM CT: +x left, +y posterior, +z superior).  Gantry 0°
irradiates from anterior (source at -y), gantry 90° from the patient's left (+x); the couch
rotates the source about the vertical (y) axis.  A BEV grid samples diverging rays: the
point (u, v, t) lies on the straight line from the source through (u, v) in the isocentre
plane, at distance t from the source along the central axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812


def beam_axes(gantry_deg: float, couch_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (beam direction source->isocentre, BEV u, BEV v) in patient (x, y, z)."""
    g, c = math.radians(gantry_deg), math.radians(couch_deg)
    to_source = np.array([math.sin(g), -math.cos(g), 0.0])
    u = np.array([math.cos(g), math.sin(g), 0.0])
    v = np.array([0.0, 0.0, 1.0])

    def couch(vec: np.ndarray) -> np.ndarray:
        x, y, z = vec
        return np.array([x * math.cos(c) + z * math.sin(c), y, -x * math.sin(c) + z * math.cos(c)])

    return -couch(to_source), couch(u), couch(v)


@dataclass
class BevGrid:
    """A BEV sampling grid for one beam on one CT geometry."""

    source: np.ndarray  # (x, y, z) mm
    direction: np.ndarray
    eu: np.ndarray
    ev: np.ndarray
    sad: float
    u: np.ndarray  # isocentre-plane coordinates (mm) of the BEV columns
    v: np.ndarray
    t: np.ndarray  # distances from the source along the central axis (mm)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.u), len(self.v), len(self.t))

    def points_t(
        self, device: torch.device, dtype: torch.dtype = torch.float32,
        scale_xyz: Sequence[float] = (1.0, 1.0, 1.0), shift_xyz: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> torch.Tensor:
        """(nu, nv, nt, 3) patient coordinates of the BEV samples, computed with torch on
        ``device``, optionally mapped by an affine ``p * scale + shift`` per axis (applied
        before broadcasting: cheap)."""
        def vec(a: np.ndarray | Sequence[float]) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)

        k, c = vec(scale_xyz), vec(shift_xyz)
        iso = vec(self.source + self.sad * self.direction)
        plane = (iso[None, None, :] + vec(self.u)[:, None, None] * vec(self.eu)[None, None, :]
                 + vec(self.v)[None, :, None] * vec(self.ev)[None, None, :])
        ray = ((plane - vec(self.source)[None, None, :]) * k).to(dtype)
        scale = (vec(self.t) / self.sad).to(dtype)
        src = (vec(self.source) * k + c).to(dtype)
        return src + ray[:, :, None, :] * scale[None, None, :, None]

    def step_lengths(self) -> np.ndarray:
        """(nu, nv) path length (mm) of one t-step along each diverging ray."""
        dt = self.t[1] - self.t[0]
        uu, vv = np.meshgrid(self.u, self.v, indexing="ij")
        return np.asarray(dt * np.sqrt(1.0 + (uu**2 + vv**2) / self.sad**2))


def bev_coords(grid: BevGrid, points: torch.Tensor) -> torch.Tensor:
    """(u, v, t) of patient points (M, 3) (x, y, z mm) in ``grid``'s beam, on their device."""
    def vec(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=points.dtype, device=points.device)

    rel = points - vec(grid.source)
    t = rel @ vec(grid.direction)
    scale = grid.sad / t.clamp(min=1e-6)
    return torch.stack([(rel @ vec(grid.eu)) * scale, (rel @ vec(grid.ev)) * scale, t], dim=-1)


def make_bev_grid(
    shape: Sequence[int],
    spacing: Sequence[float],
    iso: np.ndarray,
    gantry_deg: float,
    couch_deg: float,
    sad: float,
    target_points: np.ndarray,
    margin_mm: float,
    lateral_step: float,
    depth_step: float,
    snap: float,
) -> BevGrid:
    """BEV grid covering the projection of the target (its voxel centres, (N, 3) x, y, z mm)
    plus ``margin_mm``, snapped to ``snap``."""
    direction, eu, ev = beam_axes(gantry_deg, couch_deg)
    source = iso - sad * direction
    nz, ny, nx = shape
    sx, sy, sz = spacing
    pts = np.asarray(target_points, dtype=np.float64) - source
    t = pts @ direction
    pu = (pts @ eu) * sad / t
    pv = (pts @ ev) * sad / t

    def axis(lo: float, hi: float) -> np.ndarray:
        start = math.floor((lo - margin_mm) / snap) * snap
        stop = math.ceil((hi + margin_mm) / snap) * snap
        return np.arange(start, stop + lateral_step / 2, lateral_step)

    corners = np.array([
        [x, y, z] for x in (0, (nx - 1) * sx) for y in (0, (ny - 1) * sy)
        for z in (0, (nz - 1) * sz)
    ])
    reach = np.linalg.norm(corners - iso, axis=1).max()
    depth = np.arange(sad - reach, sad + reach + depth_step, depth_step)
    return BevGrid(source, direction, eu, ev, sad, axis(pu.min(), pu.max()),
                   axis(pv.min(), pv.max()), depth)


def sample_volume(
    volume: torch.Tensor, points: np.ndarray | torch.Tensor, spacing: Sequence[float],
    fill: float = 0.0,
) -> torch.Tensor:
    """Trilinear samples of a (z, y, x) volume at patient points (..., 3); ``fill`` outside."""
    nz, ny, nx = volume.shape
    sx, sy, sz = spacing
    p = torch.as_tensor(points, dtype=volume.dtype, device=volume.device)
    norm = torch.stack(
        [
            2 * p[..., 0] / (sx * max(nx - 1, 1)) - 1,
            2 * p[..., 1] / (sy * max(ny - 1, 1)) - 1,
            2 * p[..., 2] / (sz * max(nz - 1, 1)) - 1,
        ],
        dim=-1,
    )
    out_shape = norm.shape[:-1]
    grid = norm.reshape(1, -1, 1, 1, 3)
    sampled = F.grid_sample(
        (volume - fill)[None, None], grid, mode="bilinear", padding_mode="zeros",
        align_corners=True,
    )
    return sampled.reshape(out_shape) + fill


def sample_volume_on_grid(
    volume: torch.Tensor, grid: BevGrid, spacing: Sequence[float], fill: float = 0.0,
    mode: str = "bilinear", origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """``sample_volume`` at every sample of a BEV grid, (nu, nv, nt); the normalisation to
    grid_sample's [-1, 1] coordinates is folded into the point construction.  ``mode``
    "nearest" keeps each voxel's own value (piecewise constant, like a Siddon ray trace);
    ``origin``: the volume's first voxel centre (x, y, z mm)."""
    nz, ny, nx = volume.shape
    scale = [2.0 / (s * max(n - 1, 1)) for s, n in zip(spacing, (nx, ny, nz), strict=True)]
    shift = [-1.0 - float(o) * k for o, k in zip(origin, scale, strict=True)]
    norm = grid.points_t(volume.device, volume.dtype, scale, shift)
    sampled = F.grid_sample(
        (volume - fill)[None, None], norm.reshape(1, -1, 1, 1, 3), mode=mode,
        padding_mode="zeros", align_corners=True,
    )
    return sampled.reshape(norm.shape[:-1]) + fill


def bev_to_ct(
    bev: torch.Tensor, grid: BevGrid, coords: torch.Tensor
) -> torch.Tensor:
    """Trilinear samples of a BEV volume (nu, nv, nt) at CT voxels' (u, v, t) ``coords``."""
    _nu, _nv, _nt = bev.shape

    def norm(values: torch.Tensor, axis: np.ndarray) -> torch.Tensor:
        step = axis[1] - axis[0] if len(axis) > 1 else 1.0
        return 2 * (values - float(axis[0])) / (step * max(len(axis) - 1, 1)) - 1

    g = torch.stack(
        [norm(coords[..., 2], grid.t), norm(coords[..., 1], grid.v), norm(coords[..., 0], grid.u)],
        dim=-1,
    )
    out = F.grid_sample(
        bev[None, None], g.reshape(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros",
        align_corners=True,
    )
    return out.reshape(coords.shape[:-1])


def lateral_sample(
    maps: torch.Tensor, u_axis: np.ndarray, v_axis: np.ndarray, uv: torch.Tensor
) -> torch.Tensor:
    """Bilinear samples of (K, nu, nv) maps at points' (u, v): (K, M); 0 outside."""

    def norm(values: torch.Tensor, axis: np.ndarray) -> torch.Tensor:
        step = float(axis[1] - axis[0]) if len(axis) > 1 else 1.0
        return 2 * (values - float(axis[0])) / (step * max(len(axis) - 1, 1)) - 1

    g = torch.stack([norm(uv[:, 1], v_axis), norm(uv[:, 0], u_axis)], dim=-1)
    out = F.grid_sample(maps[:, None], g.view(1, 1, -1, 2).expand(maps.shape[0], 1, -1, 2),
                        mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, 0, 0, :]


def sample_rows(table: torch.Tensor, axis: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """Rows of ``table`` (n, P), indexed by the map pixels along ``axis``, interpolated
    linearly at positions ``x`` (M,) like :func:`lateral_sample` (zero outside): (M, P).
    A bilinear sample of ``A @ S @ B.T`` at (u, v) is ``rows(A, u) @ S @ rows(B, v).T``."""
    n = table.shape[0]
    step = float(axis[1] - axis[0]) if len(axis) > 1 else 1.0
    pos = (x - float(axis[0])) / step
    i0 = pos.floor().long()
    frac = (pos - i0)[:, None]
    out = torch.zeros((x.shape[0], table.shape[1]), dtype=table.dtype, device=table.device)
    for idx, wgt in ((i0, 1 - frac), (i0 + 1, frac)):
        ok = ((idx >= 0) & (idx < n))[:, None]
        out = out + torch.where(ok, table[idx.clamp(0, n - 1)] * wgt, 0.0)
    return out
