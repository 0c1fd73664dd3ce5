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
pyRadPlan's lattice (a :class:`BevGrid` sharing the beam's axes, traced by the model as any
BEV grid: nearest voxel's density at fine steps), and every point reads the nearest ray at
both ends of that ray's chord through the point's voxel (found exactly), averaged.
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


def chord_middle_depth(depth: torch.Tensor, rays: BevGrid, coords: torch.Tensor,
                       points: torch.Tensor, voxel: Sequence[float]) -> torch.Tensor:
    """Depth of dose points at the middle of their voxel's chord along the nearest ray.

    ``depth`` (nu, nv, nt): the water-equivalent depth along the rays of ``rays`` (a lattice
    from :func:`ray_lattice`) at their samples; ``coords`` (M, 3): the points' BEV (u, v, t);
    ``points`` (M, 3): their patient coordinates (x, y, z mm), each the centre of a voxel of
    size ``voxel`` (x, y, z mm) of the traced cube.  The nearest ray's chord through the box
    is found exactly (slab intersection) and the depth there read linearly at its two ends;
    0 outside the lattice; where the ray misses the box (it cannot on pyRadPlan's lattice),
    the depth at the point's own t."""
    nu, nv, nt = depth.shape
    f64 = torch.float64
    c = coords.to(f64)
    step = float(rays.u[1] - rays.u[0]) if nu > 1 else 1.0
    t0, dt = float(rays.t[0]), float(rays.t[1] - rays.t[0])
    iu = torch.round((c[:, 0] - float(rays.u[0])) / step).long()
    iv = torch.round((c[:, 1] - float(rays.v[0])) / step).long()
    ok = (iu >= 0) & (iu < nu) & (iv >= 0) & (iv < nv)
    iu, iv = iu.clamp(0, nu - 1), iv.clamp(0, nv - 1)

    def vec(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float64), device=depth.device)

    # the ray through the lattice point (u, v) of the isocentre plane, as p(t) = source + d t
    source = vec(rays.source)
    u_ray = vec(rays.u)[iu]
    v_ray = vec(rays.v)[iv]
    d = (rays.sad * vec(rays.direction)[None, :] + u_ray[:, None] * vec(rays.eu)[None, :]
         + v_ray[:, None] * vec(rays.ev)[None, :]) / rays.sad
    half = vec(np.asarray(voxel)) / 2.0
    rel = points.to(f64) - source[None, :]
    tiny = d.abs() < 1e-12
    safe = torch.where(tiny, torch.ones_like(d), d)
    a = (rel - half) / safe
    b = (rel + half) / safe
    lo = torch.where(tiny, torch.full_like(a, -math.inf), torch.minimum(a, b))
    hi = torch.where(tiny, torch.full_like(a, math.inf), torch.maximum(a, b))
    t_in, t_out = lo.amax(dim=1), hi.amin(dim=1)
    flat = depth.reshape(-1)
    base = (iu * nv + iv) * nt  # each point's ray in the flattened depth

    def at(t: torch.Tensor) -> torch.Tensor:
        pos = ((t - t0) / dt).clamp(0.0, nt - 1.0)
        k = pos.floor().long().clamp(max=max(nt - 2, 0))
        w = pos - k
        return (flat[base + k].to(f64) * (1 - w)
                + flat[base + (k + 1).clamp(max=nt - 1)].to(f64) * w)

    hit = t_in <= t_out
    value = torch.where(hit, 0.5 * (at(torch.where(hit, t_in, c[:, 2]))
                                    + at(torch.where(hit, t_out, c[:, 2]))), at(c[:, 2]))
    return torch.where(ok, value, torch.zeros_like(value)).to(depth.dtype)
