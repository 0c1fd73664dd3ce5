"""Proton depths of the dose points as pyRadPlan's ray tracer assigns them (engine model 9):
its ray lattice, and each point's depth at the middle of its voxel's chord along the nearest
ray, checked against a brute-force trace of the same rays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluator.dose.engines.geometry import BevGrid, bev_coords, make_bev_grid
from evaluator.dose.engines.torch_pb.proton import ProtonPencilBeam
from evaluator.dose.engines.torch_pb.rad_depth import chord_middle_depth, ray_lattice

RES = (4.0, 4.0, 4.0)
SHAPE = (16, 20, 18)  # z, y, x
SAD = 10000.0


def _beam(gantry: float, steps_per_voxel: int = 16) -> BevGrid:
    iso = np.array([9.0, 10.0, 8.0]) * RES[0]
    target = iso[None, :] + np.array([[dx, dy, dz] for dx in (-8, 8) for dy in (-8, 8)
                                      for dz in (-8, 8)], dtype=np.float64)
    return make_bev_grid(SHAPE, RES, iso, gantry, 0.0, SAD, target, 12.0, 2.0,
                         RES[0] / steps_per_voxel, 6.0)


def _brute_force(cube: np.ndarray, rays: BevGrid, centre: np.ndarray, u: float, v: float
                 ) -> float:
    """Depth at the middle of the chord of the ray through (u, v) across the voxel centred
    at ``centre``: the ray sampled every 10 um from the source, nearest voxel's density."""
    iso = rays.source + rays.sad * rays.direction
    end = iso + u * rays.eu + v * rays.ev
    unit = (end - rays.source) / np.linalg.norm(end - rays.source)
    length = float(np.dot(centre - rays.source, unit)) + 10.0
    step = 0.01
    s = np.arange(int(length / step)) * step + step / 2
    q = rays.source[None, :] + s[:, None] * unit[None, :]
    k = np.rint(q / np.asarray(RES)).astype(int)
    ok = np.all((k >= 0) & (k < np.asarray(SHAPE[::-1])), axis=1)
    rho = np.zeros(len(s))
    rho[ok] = cube[k[ok, 2], k[ok, 1], k[ok, 0]]
    cum = np.cumsum(rho) * step
    mine = np.all(np.abs(q - centre[None, :]) <= np.asarray(RES) / 2, axis=1)
    first, last = np.flatnonzero(mine)[[0, -1]]
    return float(0.5 * (cum[first] - rho[first] * step + cum[last]))


def test_lattice_is_pyradplans() -> None:
    """Spacing min(voxel)/sqrt(2) in the plane one voxel beyond the farthest corner, scaled
    to the isocentre plane; a ray on the beam axis; covering the beam's grid."""
    grid = _beam(30.0)
    rays = ray_lattice(grid, SHAPE, RES, (0.0, 0.0, 0.0))
    corners = np.array([[x, y, z] for x in (0, SHAPE[2] - 1) for y in (0, SHAPE[1] - 1)
                        for z in (0, SHAPE[0] - 1)]) * RES[0]
    plane = ((corners - grid.source) @ grid.direction).max() + RES[0]
    step = RES[0] / math.sqrt(2) * SAD / plane
    assert np.allclose(np.diff(rays.u), step) and np.allclose(np.diff(rays.v), step)
    assert np.min(np.abs(rays.u)) < 1e-9 and np.min(np.abs(rays.v)) < 1e-9
    assert rays.u[0] <= grid.u[0] and rays.u[-1] >= grid.u[-1]
    assert (rays.t == grid.t).all()


@pytest.mark.parametrize(("steps_per_voxel", "tol_mm"), [(64, 0.05), (16, 0.3)])
def test_chord_middle_depth_matches_a_brute_force_trace(steps_per_voxel: int,
                                                        tol_mm: float) -> None:
    """On a noisy cube and an oblique beam, each point's depth is the middle of its voxel's
    chord along its nearest lattice ray, to the tracing's resolution (nearest sampling: up
    to half a step times the density jump per boundary; the engine traces 16 steps per
    voxel), which is not the depth at the voxel centre along that ray."""
    rng = np.random.default_rng(4)
    cube = np.clip(1.0 + 0.1 * rng.standard_normal(SHAPE), 0.0, None).astype(np.float32)
    model = ProtonPencilBeam()
    rays = ray_lattice(_beam(30.0, steps_per_voxel), SHAPE, RES, (0.0, 0.0, 0.0))
    depth = model._wet(torch.as_tensor(cube), rays, RES)
    idx = np.stack([rng.integers(5, n - 5, 20) for n in SHAPE[::-1]], axis=1)  # x, y, z
    points = torch.as_tensor(idx * np.asarray(RES), dtype=torch.float32)
    coords = bev_coords(rays, points)
    ours = chord_middle_depth(depth, rays, coords, points, RES).numpy()
    step = rays.u[1] - rays.u[0]
    ref, at_centre = [], []
    for p, c in zip(points.numpy().astype(np.float64), coords.numpy(), strict=True):
        iu, iv = round((c[0] - rays.u[0]) / step), round((c[1] - rays.v[0]) / step)
        ref.append(_brute_force(cube, rays, p, rays.u[iu], rays.v[iv]))
        at_centre.append(float(np.interp(c[2], rays.t, depth.numpy()[iu, iv])))
    assert np.abs(ours - np.asarray(ref)).max() < tol_mm
    # the chord's middle is not the centre: on a 30 degree beam the ray's chord through an
    # axis-aligned voxel is off-centre along the ray where the ray is off-centre laterally
    assert np.abs(np.asarray(at_centre) - np.asarray(ref)).max() > 0.3
