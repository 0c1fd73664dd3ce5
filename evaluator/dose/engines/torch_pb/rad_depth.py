"""Water-equivalent depth of the dose points as pyRadPlan's ray tracer assigns it (protons).

pyRadPlan (``RayTracerBase.trace_cubes``) traces a lattice of diverging rays, spaced
``min(voxel) / sqrt(2)`` in a plane just beyond the traced cube (one voxel past its farthest
corner) with a ray on the central axis, through the densities on the dose grid (Siddon), and
gives each voxel the depth at the **middle of the chord** of the ray whose lattice cell its
centre projects into.  That depth is not the depth at the voxel centre: on a 6.4 mm grid the
chord's middle lies up to a few millimetres before or behind it (per-voxel depths differed by
1.5-1.9 mm SD from ours, which interpolated fine rays at the centre), and on a diagonal beam
the rays run through the voxel centres, where their chords are longest and an sCT's voxel
noise adds up most (our interpolated depths reacted 8-15 % less to noise).  Both decide the
MAE dose in the target under an HU error, so the depths are built the same way here: rays on
pyRadPlan's lattice (a :class:`BevGrid` sharing the beam's axes), traced with the nearest
voxel's density at fine steps, each voxel's chord middle kept per sample, and every point
reading the nearest ray at its own depth (the point on that ray lies in the point's voxel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from evaluator.dose.engines.geometry import BevGrid


def ray_lattice(grid: BevGrid, shape: Sequence[int], res: Sequence[float],
                origin: Sequence[float]) -> BevGrid:
    """``grid``'s beam with pyRadPlan's rays for a cube of ``shape`` (z, y, x), voxel size
    ``res`` and first voxel centre ``origin`` (x, y, z mm): the lattice spacing is
    min(res)/sqrt(2) in the plane one voxel beyond the cube's farthest corner from the source,
    scaled to the isocentre plane; one ray on the axis; covering ``grid``'s lateral range."""
    nz, ny, nx = shape
    corners = np.array([[x, y, z] for x in (0, nx - 1) for y in (0, ny - 1)
                        for z in (0, nz - 1)], dtype=np.float64)
    corners = corners * np.asarray(res, dtype=np.float64) + np.asarray(origin, dtype=np.float64)
    plane = float(((corners - grid.source) @ grid.direction).max()) + max(res)
    step = min(res) / math.sqrt(2.0) * grid.sad / plane

    def axis(a: np.ndarray) -> np.ndarray:
        return np.arange(math.floor(a[0] / step), math.ceil(a[-1] / step) + 1) * step

    return BevGrid(grid.source, grid.direction, grid.eu, grid.ev, grid.sad, axis(grid.u),
                   axis(grid.v), grid.t)


def chord_middle_depth(cube: torch.Tensor, rays: BevGrid, res: Sequence[float],
                       origin: Sequence[float]) -> torch.Tensor:
    """(nu, nv, nt) water-equivalent depth along each ray of ``rays`` (a lattice from
    :func:`ray_lattice`) through the density ``cube`` (z, y, x; voxel size ``res``, first
    centre ``origin``): at every sample, the depth at the middle of the ray's chord through
    the voxel the sample lies in (density of the nearest voxel, zero outside)."""
    nz, ny, nx = cube.shape
    idx = torch.round(rays.points_t(cube.device, cube.dtype, [1.0 / r for r in res],
                                    [-float(o) / r for o, r in zip(origin, res, strict=True)])
                      ).long()
    inside = ((idx[..., 0] >= 0) & (idx[..., 0] < nx) & (idx[..., 1] >= 0)
              & (idx[..., 1] < ny) & (idx[..., 2] >= 0) & (idx[..., 2] < nz))
    voxel = torch.where(inside, (idx[..., 2] * ny + idx[..., 1]) * nx + idx[..., 0], -1)
    del idx
    rho = torch.where(inside, cube.reshape(-1)[voxel.clamp(min=0)], 0.0).clamp(min=0.0)
    steps = torch.as_tensor(rays.step_lengths(), dtype=cube.dtype, device=cube.device)
    seg = rho * steps[:, :, None]
    cum = torch.cumsum(seg, dim=2)
    # a chord starts where the voxel changes along the ray; the depth is non-decreasing, so
    # the running max of the chord starts' entry depths is each sample's chord entry, and
    # the reversed running min of the chord ends' exit depths its exit
    first = torch.ones_like(inside)
    first[..., 1:] = voxel[..., 1:] != voxel[..., :-1]
    last = torch.ones_like(inside)
    last[..., :-1] = first[..., 1:]
    entry = torch.where(first, cum - seg, -math.inf).cummax(dim=2).values
    exit_ = torch.where(last, cum, math.inf).flip(2).cummin(dim=2).values.flip(2)
    return 0.5 * (entry + exit_)


def depth_at_points(depth: torch.Tensor, rays: BevGrid, coords: torch.Tensor) -> torch.Tensor:
    """Depth of points with BEV ``coords`` (M, 3: u, v, t) from :func:`chord_middle_depth`:
    the nearest ray's, at the sample nearest the point's t (0 outside the lattice)."""
    nu, nv, nt = depth.shape
    step = float(rays.u[1] - rays.u[0]) if nu > 1 else 1.0
    dt = float(rays.t[1] - rays.t[0])
    iu = torch.round((coords[:, 0] - float(rays.u[0])) / step).long()
    iv = torch.round((coords[:, 1] - float(rays.v[0])) / step).long()
    it = torch.round((coords[:, 2] - float(rays.t[0])) / dt).long()
    ok = (iu >= 0) & (iu < nu) & (iv >= 0) & (iv < nv) & (it >= 0) & (it < nt)
    value = depth[iu.clamp(0, nu - 1), iv.clamp(0, nv - 1), it.clamp(0, nt - 1)]
    return torch.where(ok, value, torch.zeros_like(value))
