"""Where the beamlets go: the steering target, the bixel lattice of each beam and the plan's
explicitly listed beamlets (both modalities; the proton energy layers live in ``proton.py``).

Beamlets sit on a lattice of ``bixel`` mm through the isocentre, in the isocentre plane of
each beam; a cell ``(cu, cv)`` is the beamlet centred at ``(cu * bixel, cv * bixel)`` mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from evaluator.dose.engines.geometry import BevGrid, bev_coords
from evaluator.dose.plan import Plan


@dataclass
class SpotList:
    """Explicit beamlets of one beam: isocentre-plane (u, v) in mm and, for protons, the
    water-equivalent range in mm (used to recompute another engine's beamlets)."""

    u_mm: np.ndarray
    v_mm: np.ndarray
    range_mm: np.ndarray


def plan_spots(plan: Plan) -> list[SpotList] | None:
    """The plan's explicit beamlets as SpotLists (None when the engine steers itself)."""
    if plan.beamlets is None:
        return None
    out = []
    for beam in plan.beamlets:
        u = np.asarray(beam["u_mm"], dtype=np.float64)
        rng = beam.get("range_mm")
        out.append(SpotList(u, np.asarray(beam["v_mm"], dtype=np.float64),
                            np.asarray(rng, dtype=np.float64) if rng is not None
                            else np.full(len(u), np.nan)))
    return out


def steering_target(target: np.ndarray, spacing: Sequence[float], bixel_mm: float) -> np.ndarray:
    """The target dilated by a box of ceil(max(voxel, bixel) / voxel) voxels per axis, the
    volume matRad/pyRadPlan steer beamlets onto (``target`` is (z, y, x))."""
    from scipy import ndimage

    out = np.asarray(target, dtype=bool)
    for axis, r in zip((2, 1, 0), _steering_radius(spacing, bixel_mm), strict=True):
        out = ndimage.maximum_filter1d(out.astype(np.uint8), size=2 * r + 1, axis=axis,
                                       mode="constant").astype(bool)
    return out


def _steering_radius(spacing: Sequence[float], bixel_mm: float) -> list[int]:
    return [math.ceil(max(float(s), bixel_mm) / float(s) - 1e-9) for s in spacing]  # x, y, z


def steering_target_t(target: torch.Tensor, spacing: Sequence[float], bixel_mm: float
                      ) -> torch.Tensor:
    """:func:`steering_target` on a torch device (separable max pooling; float 0/1 out)."""
    out = target.to(torch.float32)[None, None]
    for axis, r in zip((4, 3, 2), _steering_radius(spacing, bixel_mm), strict=True):
        size = [1, 1, 1]
        size[axis - 2] = 2 * r + 1
        pad = [0, 0, 0]
        pad[axis - 2] = r
        out = F.max_pool3d(out, kernel_size=tuple(size), stride=1, padding=tuple(pad))
    return out[0, 0]


def lattice_cells(
    grid: BevGrid, bixel: float, spacing: Sequence[float], steer_pts: torch.Tensor,
    given: SpotList | None,
) -> np.ndarray:
    """(n, 2) sorted (u, then v) lattice cells of one beam, one per ray: the listed beamlets'
    cells, or the cells nearest to the steering target's voxel projections (matRad's rays;
    ``steer_pts`` (N, 3) x, y, z mm)."""
    if given is not None:
        found = np.round(np.stack([given.u_mm, given.v_mm], axis=1) / bixel)
    else:
        rays = torch.round(bev_coords(grid, steer_pts)[:, :2] / bixel).long()
        low = rays.min(dim=0).values if len(rays) else torch.zeros(2, dtype=torch.long)
        span = int((rays[:, 1] - low[1]).max()) + 1 if len(rays) else 1
        key = torch.unique((rays[:, 0] - low[0]) * span + (rays[:, 1] - low[1]))
        found = (torch.stack([key // span, key % span], dim=1) + low.to(key.device)
                 ).cpu().numpy()
        # voxels coarser than the bixels leave lattice rows without a projected voxel
        # centre: pad each ray with its neighbours (pyRadPlan's padding, whose offsets run
        # from -floor(voxel / bixel) to floor(voxel / bixel) - 1)
        coarsest = max(float(x) for x in spacing)
        reach = math.floor(coarsest / bixel)
        if bixel < coarsest:
            shifts = np.stack(np.meshgrid(np.arange(-reach, reach), np.arange(-reach, reach),
                                          indexing="ij"), axis=-1).reshape(-1, 2)
            found = (found[:, None, :] + shifts[None, :, :]).reshape(-1, 2)
    return np.unique(found.astype(np.int64).reshape(-1, 2), axis=0)


def pixel_to_bixel(grid: BevGrid, cells: np.ndarray, bixel: float) -> np.ndarray:
    """(nu, nv) index of the cell each BEV pixel belongs to, -1 outside every bixel (via a
    table over the lattice)."""
    nu, nv = len(grid.u), len(grid.v)
    if not len(cells):
        return np.full((nu, nv), -1, dtype=np.int64)
    ku = np.round(grid.u / bixel).astype(int)
    kv = np.round(grid.v / bixel).astype(int)
    first = cells.min(axis=0)
    table = np.full(tuple(cells.max(axis=0) - first + 1), -1, dtype=np.int64)
    table[cells[:, 0] - first[0], cells[:, 1] - first[1]] = np.arange(len(cells))
    iu, iv = ku - first[0], kv - first[1]
    ok_u = (iu >= 0) & (iu < table.shape[0])
    ok_v = (iv >= 0) & (iv < table.shape[1])
    sub = table[np.clip(iu, 0, table.shape[0] - 1)][:, np.clip(iv, 0, table.shape[1] - 1)]
    return np.asarray(np.where(ok_u[:, None] & ok_v[None, :], sub, -1))


def centre_pixels(grid: BevGrid, cells: np.ndarray, bixel: float) -> np.ndarray:
    """(n, 2) BEV pixel index (u, v) of each cell's centre."""
    if not len(cells):
        return np.zeros((0, 2), dtype=np.int64)
    return np.stack([
        np.argmin(np.abs(grid.u[None, :] - cells[:, :1] * bixel), axis=1),
        np.argmin(np.abs(grid.v[None, :] - cells[:, 1:] * bixel), axis=1),
    ], axis=1).reshape(-1, 2)
