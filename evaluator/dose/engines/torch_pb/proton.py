"""Proton pencil beam: spots on the bixel lattice, energy layers every ``LAYER_SPACING_MM`` of
water-equivalent range covering the (dilated, like matRad) target along each ray of the
planning CT; per layer, the integral depth dose (``proton_physics``) times a lateral Gaussian
whose variance grows from the entrance to the end of range.  Weights are the active (layer,
spot) pairs of each beam, layer-major.  The influence matrix is sparse: each spot's column
keeps the entries above ``cutoff`` x its largest (0.01 % of the maximum dose dropped).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from evaluator.dose.engines.geometry import (
    BevGrid,
    lateral_sample,
    sample_rows,
    sample_volume_on_grid,
)
from evaluator.dose.engines.torch_pb.common import (
    INFLUENCE_BLOCK,
    BeamSetup,
    Columns,
    PencilBeamModel,
    PlanningCT,
    VoxelGeometry,
)
from evaluator.dose.engines.torch_pb.dose_grid import DoseGrid
from evaluator.dose.engines.torch_pb.proton_physics import (
    CUTOFF_SIGMA_SCALE,
    PROTON_GY_PER_WEIGHT,
    PROTON_SAD_MM,
    proton_air_offset_mm,
    proton_idd_table,
    proton_mcs_fraction,
    proton_spot_sigmas_mm,
)
from evaluator.dose.engines.torch_pb.rad_depth import chord_middle_depth, ray_lattice
from evaluator.dose.engines.torch_pb.steering import SpotList
from evaluator.dose.optimize import Influence
from evaluator.dose.plan import Plan

LAYER_SPACING_MM = 3.0
PROTON_DEPTH_STEPS_PER_VOXEL = 16  # ray samples per traced voxel (see _depth_step)
PEAK_BEFORE_RANGE_MM = 2.0  # our depth dose peaks ~2 mm before R (R = P + 1.9 mm fitted)
INFLUENCE_SIGMAS = 5.0  # points beyond 5 sigma of a layer's spots get none of it
# a layer's spot variance grows from sigma_ini^2 at the entrance to its widest; the profile
# at a depth mixes the two Gaussians of the levels (variances evenly between those) around
# that depth's variance: 3 levels instead of 2 (entrance and widest only) brought the
# pelvis's gamma response within 0.11 pp of pyRadPlan's single Gaussian (was 0.31 pp), for
# ~15 % more recompute time on the pelvis
LATERAL_LEVELS = 3


@functools.lru_cache(maxsize=256)
def _blur_matrix_np(n: int, sigma_px: float) -> np.ndarray:
    """(n, n) Gaussian smoothing matrix, kernel normalised to 1 (zero padding at the edges)."""
    x = np.arange(n)
    sigma = max(sigma_px, 1e-3)
    radius = math.ceil(3.5 * sigma)
    full = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).sum()
    d = x[:, None] - x[None, :]
    m = np.exp(-0.5 * (d / sigma) ** 2) * (np.abs(d) <= radius)
    return np.asarray(m / full)


def _level_weights(mix: torch.Tensor) -> torch.Tensor:
    """(L, ...) weights of the lateral levels for variance fractions ``mix`` (...): the two
    levels around it, linear between them (the mixture has exactly that variance)."""
    t = mix.clamp(0.0, 1.0) * (LATERAL_LEVELS - 1)
    j0 = t.floor().clamp(max=LATERAL_LEVELS - 2)
    f = t - j0
    levels = torch.arange(LATERAL_LEVELS, dtype=mix.dtype, device=mix.device).view(
        -1, *([1] * mix.dim()))
    return ((levels == j0) * (1 - f) + (levels == j0 + 1) * f).to(mix.dtype)


@dataclass
class ProtonBeam(BeamSetup):
    layer_ranges: np.ndarray  # (n_layers,) ranges in mm WET
    active: np.ndarray  # (n_layers, n_bixels) bool: the spots each layer delivers
    # stacked blur matrices (LATERAL_LEVELS n_layers, n, n) along u and v, built on first use
    blur: tuple[torch.Tensor, torch.Tensor] | None = None
    idd: tuple[float, int, torch.Tensor] | None = None  # depth step, samples, table
    # pyRadPlan's ray lattice for the traced cube (see rad_depth), keyed by the cube's
    # geometry (shape, voxel size, origin)
    rays: tuple[tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]], BevGrid] | None = None

    @property
    def step_mm(self) -> float:
        """BEV pixel size in the isocentre plane."""
        return float(self.grid.u[1] - self.grid.u[0]) if len(self.grid.u) > 1 else 1.0


class ProtonPencilBeam(PencilBeamModel[ProtonBeam]):
    """Protons: one weight per active (energy layer, spot) pair."""

    sad_mm = PROTON_SAD_MM

    def _margin_mm(self, bixel: float) -> float:
        return 2 * bixel + 12.0

    def _depth_step(self, spacing: Sequence[float], plan: Plan) -> float:
        """1/16 of the voxel traced (the dose grid's, or the CT's where coarser): a proton's
        dose moves with its range, and at 1/4 the sampling bias of the depth (up to 1/8 voxel
        per boundary, one sign over a flat surface) shortened the pelvis phantom's ranges by
        ~0.2 mm, 1.5-3 % of its MAE under an HU bias; at 1/16 below 0.05 mm."""
        return max(min(spacing), plan.dose_grid_mm) / PROTON_DEPTH_STEPS_PER_VOXEL

    # ---------- water-equivalent depth of the dose points ----------
    def _wet_volumes(
        self, ct_hu: np.ndarray, spacing: Sequence[float], setups: Sequence[ProtonBeam],
        dose_grid: DoseGrid | None = None, inside: np.ndarray | None = None,
    ) -> list[torch.Tensor]:
        """Per beam, the depth along pyRadPlan's ray lattice (``rad_depth``) through the
        densities (on the dose grid where given, as pyRadPlan traces); the points read it at
        their voxel's chord middle (:meth:`_point_wet`)."""
        density = self._density(ct_hu, inside)
        res: tuple[float, ...] = tuple(float(x) for x in spacing)
        origin: tuple[float, ...] = (0.0, 0.0, 0.0)
        cube = density
        if dose_grid is not None:
            cube = dose_grid.resample(density, spacing)
            res, origin = (dose_grid.res,) * 3, tuple(float(o) for o in dose_grid.origin)
        key = (tuple(cube.shape), res, origin)
        out = []
        for s in setups:
            if s.rays is None or s.rays[0] != key:
                s.rays = (key, ray_lattice(s.grid, cube.shape, res, origin))
            out.append(self._wet(cube, s.rays[1], res, origin))
        return out

    @staticmethod
    def _point_wet(wet_bev: list[torch.Tensor], setups: Sequence[ProtonBeam],
                   vox: VoxelGeometry) -> list[torch.Tensor]:
        """Depth of every evaluation point (a voxel centre of the traced cube) along each
        beam: at the middle of its voxel's chord along the nearest ray, as pyRadPlan assigns
        it (the proton dose follows the depth voxel by voxel)."""
        out = []
        for depth, s, coords in zip(wet_bev, setups, vox.bev, strict=True):
            if s.rays is None:
                raise RuntimeError("_wet_volumes sets up the ray lattice before _point_wet")
            key, rays = s.rays
            out.append(chord_middle_depth(depth, rays, coords, vox.points, key[1]))
        return out

    # ---------- energy layers ----------
    def _beam(self, geo: BeamSetup, given: SpotList | None, ct: PlanningCT) -> ProtonBeam:
        if given is not None:
            ranges, active = self._listed_layers(geo, given, ct.bixel_mm)
        elif geo.n_bixels:
            ranges, active = self._steered_layers(geo, ct)
        else:
            ranges, active = np.zeros(0), np.zeros((0, 0), dtype=bool)
        return ProtonBeam.extend(geo, layer_ranges=ranges, active=active)

    @staticmethod
    def _listed_layers(geo: BeamSetup, given: SpotList, b: float
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The layers and active spots of the listed (spot, range) pairs."""
        ranges = np.unique(np.round(given.range_mm, 3))
        active = np.zeros((len(ranges), geo.n_bixels), dtype=bool)
        cell_index = geo.cell_index()
        for u, v, r in zip(given.u_mm, given.v_mm, given.range_mm, strict=True):
            active[np.searchsorted(ranges, round(r, 3)),
                   cell_index[(round(u / b), round(v / b))]] = True
        return ranges, active

    def _steered_layers(self, geo: BeamSetup, ct: PlanningCT) -> tuple[np.ndarray, np.ndarray]:
        """Like matRad: a layer is used on a spot when its Bragg peak (PEAK_BEFORE_RANGE_MM
        before our R) lies between where the spot's central ray enters and leaves the
        (dilated) target; a ray that misses gets none."""
        grid = geo.grid
        in_target = sample_volume_on_grid(ct.steer, grid, ct.spacing) > 0.5
        wet = self._wet(ct.density, grid, ct.spacing) + proton_air_offset_mm(geo.ssd_mm,
                                                                             self.sad_mm)
        tw = torch.where(in_target, wet, torch.full_like(wet, math.nan)).cpu().numpy()
        ci, cj = geo.spot_pixels[:, 0], geo.spot_pixels[:, 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rays that miss: all-NaN
            lo = np.nanmin(tw[ci, cj], axis=1)
            hi = np.nanmax(tw[ci, cj], axis=1)
            glo, ghi = np.nanmin(tw), np.nanmax(tw)
        ranges = np.arange(
            math.floor((glo + PEAK_BEFORE_RANGE_MM) / LAYER_SPACING_MM) * LAYER_SPACING_MM,
            ghi + PEAK_BEFORE_RANGE_MM + LAYER_SPACING_MM, LAYER_SPACING_MM,
        ) if np.isfinite(glo) else np.zeros(0)
        ranges = ranges[ranges > 5.0]
        peaks = ranges - PEAK_BEFORE_RANGE_MM
        with np.errstate(invalid="ignore"):
            active = (peaks[:, None] >= lo[None, :]) & (peaks[:, None] <= hi[None, :])
        return ranges, active

    # ---------- layout ----------
    def _beam_weights(self, s: ProtonBeam) -> int:
        return int(s.active.sum())

    def _listed_in_beam(self, s: ProtonBeam, cells: dict[tuple[int, int], int],
                        given: SpotList, bixel: float) -> list[int]:
        flat = np.cumsum(s.active.ravel()) - 1  # layout position of each active pair
        return [int(flat[int(np.searchsorted(s.layer_ranges, round(r, 3))) * s.active.shape[1]
                         + cells[(round(u / bixel), round(v / bixel))]])
                for u, v, r in zip(given.u_mm, given.v_mm, given.range_mm, strict=True)]

    def _beam_beamlets(self, s: ProtonBeam, bixel: float) -> dict[str, list[float]]:
        cu, cv = s.cells_mm(bixel)
        layer, spot = np.nonzero(s.active)  # layer-major, like the weights
        return {"u_mm": cu[spot].tolist(), "v_mm": cv[spot].tolist(),
                "range_mm": s.layer_ranges[layer].tolist()}

    # ---------- dose ----------
    def _tables(self, s: ProtonBeam) -> tuple[torch.Tensor, torch.Tensor, float, int, torch.Tensor]:
        """Weight-independent pieces of one beam's model, built on first use: the stacked
        blur matrices along u and v (level-major: every layer's sigma at each of the
        LATERAL_LEVELS from the entrance to the end of range, narrowed like pyRadPlan's
        lateral cut-off) and the depth-dose table of its layers."""
        nu, nv = s.pixel_to_bixel.shape
        h = s.step_mm
        if s.blur is None:
            def blur_px(sigma: float) -> float:
                # bilinear sampling of the map adds a variance of h^2/6: take it off the blur
                return math.sqrt(max(sigma**2 - h * h / 6.0, (0.5 * h) ** 2)) / h

            levels: list[list[float]] = [[] for _ in range(LATERAL_LEVELS)]
            for r in s.layer_ranges:
                sigma_ini, sigma_mcs = (x * CUTOFF_SIGMA_SCALE
                                        for x in proton_spot_sigmas_mm(float(r), s.ssd_mm))
                for j, row in enumerate(levels):
                    row.append(blur_px(math.sqrt(
                        sigma_ini**2 + j / (LATERAL_LEVELS - 1) * sigma_mcs**2)))
            flat = [x for row in levels for x in row]

            def stack(n: int) -> torch.Tensor:
                return torch.as_tensor(
                    np.stack([_blur_matrix_np(n, round(x, 4)) for x in flat]).reshape(-1, n, n),
                    dtype=self.dtype, device=self.device)

            s.blur = (stack(nu), stack(nv))
        if s.idd is None:
            z, idd = proton_idd_table(s.layer_ranges)
            s.idd = (float(z[1] - z[0]), len(z),
                     torch.as_tensor(idd, dtype=self.dtype, device=self.device))
        return (*s.blur, *s.idd)

    def _depth(
        self, s: ProtonBeam, wet: torch.Tensor, dz: float, n_z: int, idd_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per layer at each point: depth dose (K, M) and the fraction of the layer's largest
        MCS variance reached there (K, M)."""
        wet = wet + proton_air_offset_mm(s.ssd_mm, s.grid.sad)
        mix = proton_mcs_fraction(wet, s.layer_ranges)  # (K, M)
        pos = (wet / dz).clamp(0, n_z - 1.001)
        i0 = pos.floor().long()
        frac = pos - i0
        depth = idd_t[:, i0] * (1 - frac) + idd_t[:, (i0 + 1).clamp(max=n_z - 1)] * frac
        return depth, mix

    @staticmethod
    def _scale(s: ProtonBeam, coords: torch.Tensor) -> torch.Tensor:
        """Gy per weight and per unit of the (isocentre-plane) lateral profile at the points:
        like matRad, spot profiles are normalised per physical area at the voxel's depth,
        (SAD / t)^2."""
        return PROTON_GY_PER_WEIGHT * (s.grid.sad / coords[:, 2].clamp(min=1.0)) ** 2

    def _beam_dose(self, plan: Plan, s: ProtonBeam, coords: torch.Tensor, wet: torch.Tensor,
                   w: torch.Tensor) -> torch.Tensor:
        """Sum over energy layers of IDD(WEPL) x lateral profile.  The spot variance grows
        from sigma_ini^2 at the entrance with the machine's sigma_mcs(R, d)^2; the profile at
        depth d mixes the two Gaussians of the LATERAL_LEVELS around it with the weights that
        give exactly that depth's variance."""
        nu, nv = s.pixel_to_bixel.shape
        h = s.step_mm
        n_layers = len(s.layer_ranges)
        layer_idx, bix_idx = np.nonzero(s.active)
        spots = torch.zeros((n_layers, nu, nv), dtype=self.dtype, device=self.device)
        li = torch.as_tensor(layer_idx, device=self.device)
        pu = torch.as_tensor(s.spot_pixels[bix_idx, 0], device=self.device)
        pv = torch.as_tensor(s.spot_pixels[bix_idx, 1], device=self.device)
        spots = spots.index_put((li, pu, pv), w, accumulate=True)
        bu, bv, dz, n_z, idd_t = self._tables(s)
        # every layer's map blurred with each level's sigma
        maps = bu @ torch.cat([spots] * LATERAL_LEVELS) @ bv.transpose(1, 2) / (h * h)
        lat = lateral_sample(maps, s.grid.u, s.grid.v, coords)  # (L K, M)
        depth, mix = self._depth(s, wet, dz, n_z, idd_t)
        lateral = (lat.view(LATERAL_LEVELS, n_layers, -1) * _level_weights(mix)).sum(dim=0)
        return self._scale(s, coords) * (lateral * depth).sum(dim=0)

    # ---------- influence matrix ----------
    def _beam_columns(self, plan: Plan, s: ProtonBeam, coords: torch.Tensor, wet: torch.Tensor
                      ) -> Iterator[Columns]:
        h = s.step_mm
        bu, bv, dz, n_z, idd_t = self._tables(s)
        depth, mix = self._depth(s, wet, dz, n_z, idd_t)
        scale = self._scale(s, coords) / (h * h)
        n_layers = len(s.layer_ranges)
        layer_idx, bix_idx = np.nonzero(s.active)  # the layout's (layer-major) order
        for layer in range(n_layers):
            mine = np.flatnonzero(layer_idx == layer)
            if len(mine) == 0:
                continue
            spot_px = s.spot_pixels[bix_idx[mine]]
            # the layer reaches the points before the end of its depth dose and within
            # INFLUENCE_SIGMAS of its widest (end-of-range) Gaussian around its spots
            sigma_ini, sigma_mcs = proton_spot_sigmas_mm(float(s.layer_ranges[layer]), s.ssd_mm)
            reach = INFLUENCE_SIGMAS * math.hypot(sigma_ini, sigma_mcs) + h
            u_spot, v_spot = s.grid.u[spot_px[:, 0]], s.grid.v[spot_px[:, 1]]
            near = ((depth[layer] > 0)
                    & (coords[:, 0] >= float(u_spot.min()) - reach)
                    & (coords[:, 0] <= float(u_spot.max()) + reach)
                    & (coords[:, 1] >= float(v_spot.min()) - reach)
                    & (coords[:, 1] <= float(v_spot.max()) + reach))
            points = torch.nonzero(near).squeeze(1)
            if points.numel() == 0:
                continue
            uv = coords[points]
            pu = torch.as_tensor(spot_px[:, 0], device=self.device)
            pv = torch.as_tensor(spot_px[:, 1], device=self.device)
            # per level: the blur rows at the points and the level's weight there
            rows = [(sample_rows(bu[layer + k * n_layers], s.grid.u, uv[:, 0]),
                     sample_rows(bv[layer + k * n_layers], s.grid.v, uv[:, 1]))
                    for k in range(LATERAL_LEVELS)]
            c = (scale[points] * depth[layer, points])[None, :] * _level_weights(
                mix[layer, points])
            chunk = max(1, INFLUENCE_BLOCK // int(points.numel()))
            for start in range(0, len(mine), chunk):
                j = slice(start, min(start + chunk, len(mine)))
                block = sum((c[k][:, None] * ru[:, pu[j]] * rv[:, pv[j]]
                             for k, (ru, rv) in enumerate(rows)),
                            torch.zeros((), dtype=self.dtype, device=self.device))
                yield mine[j], points, block

    def _assemble(self, columns: Iterator[Columns], n_points: int, n: int,
                  order: torch.Tensor | None, cutoff: float, budget: int) -> Influence | None:
        """Sparse: each beamlet's column keeps the entries above ``cutoff`` x its largest."""
        point_idx, weight_idx, vals = [], [], []
        nnz = 0
        for index, points, block in columns:
            keep = block > cutoff * block.amax(dim=0, keepdim=True)
            r, c = torch.nonzero(keep, as_tuple=True)
            nnz += int(r.numel())
            if 20 * nnz > budget:
                return None
            point_idx.append(r if points is None else points[r])
            weight_idx.append(torch.as_tensor(index, device=self.device)[c])
            vals.append(block[r, c])
        weights = torch.cat(weight_idx) if weight_idx else torch.zeros(
            0, dtype=torch.long, device=self.device)
        if order is not None:
            column = torch.empty(n, dtype=torch.long, device=self.device)
            column[order] = torch.arange(n, device=self.device)
            weights = column[weights]
        return Influence.from_entries(
            torch.cat(point_idx) if point_idx else torch.zeros_like(weights), weights,
            torch.cat(vals) if vals else torch.zeros(0, dtype=self.dtype, device=self.device),
            (n_points, n))
