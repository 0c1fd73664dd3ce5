"""Own pencil-beam engines in torch (CPU or CUDA): photons and protons.

Both trace diverging rays through the CT in a beam's-eye-view grid, accumulate radiological
(water-equivalent) depth along each ray, and spread the beamlet fluence laterally with
Gaussian kernels in the isocentre plane:

* photons: depth dose ``(1 - exp(-d/b)) exp(-mu d)`` (6 MV-like build-up and attenuation)
  times the inverse square law, lateral kernel = primary Gaussian + broad scatter Gaussian;
  beamlets are square bixels of ``plan.bixel_width_mm`` on a lattice through the isocentre.
* protons: an integral depth dose per energy layer computed from the range-energy law
  R = a E^p (stopping power ~ residual range^(1/p - 1)), with nuclear fluence loss and
  range straggling; spots on the same lattice, energy layers every ``LAYER_SPACING_MM`` of
  water-equivalent range covering the target along each ray of the planning CT; lateral
  sigma = initial spot size (+) multiple Coulomb scattering, both fitted to pyRadPlan's
  Generic proton machine (see the constants).

Doses are linear in the beamlet weights, so optimisation differentiates through them.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from evaluator.dose.engines.base import DoseComputationError
from evaluator.dose.engines.geometry import BevGrid, bev_to_ct, make_bev_grid, sample_volume
from evaluator.dose.engines.hlut import hu_to_density_torch
from evaluator.dose.plan import Plan

PHOTON_SAD_MM = 1000.0
PROTON_SAD_MM = 10000.0
# photon model: fitted (least squares) to pyRadPlan's Generic 6 MV single-field doses in water
# with a bone slab (64^3 at 3 mm); see README
BUILDUP_MM = 3.57
MU_PER_MM = 0.00363
SIGMA_PRIMARY_MM = 2.47
SIGMA_SCATTER_MM = 18.4
SCATTER_FRACTION = 0.282
SCATTER_BUILDUP_MM = 36.4
# proton model: spot size and scattering fitted like the photons to pyRadPlan's Generic proton
# machine (one field, 1474 spots).  Depth dose fitted globally (least squares, every 7th energy,
# up to 1.1x the peak depth; RMS 1.2 % of the peak) to the machine's tabulated integral depth
# doses: range-energy exponent p, Bortfeld range straggling plus a constant 2.2 mm (energy
# spread) in quadrature, linear fluence loss, an entrance build-up (secondaries) of depth
# PROTON_BUILDUP_DEPTH_MM and relative size PROTON_BUILDUP_PER_MM * R, and a gain a + b R;
# MeV/mm per proton (the machine's MeV cm^2/g / 10)
RANGE_ALPHA = 0.0022 * 10.0  # mm / MeV^p (R = a E^p, water)
RANGE_P = 1.694
NUCLEAR_LOSS_PER_MM = 0.001173
ENERGY_SPREAD_SIGMA_MM = 2.202
PROTON_BUILDUP_PER_MM = 0.000535
PROTON_BUILDUP_DEPTH_MM = 14.79
IDD_GAIN = (0.8074, 0.000381)  # gain = a + b * R (R in mm)
# lateral: pyRadPlan's Generic machine gives sigma^2 = sigma_ini(E)^2 + sigma_mcs(E, depth)^2;
# fitted: sigma_ini at ~9.9 m from the source = A - B ln R (max error 1.3 mm) and sigma_mcs at
# 0.9x the peak depth = MCS_A R^MCS_EXP (max error 0.8 mm; one sigma per layer)
SPOT_SIGMA_A_MM = 14.50
SPOT_SIGMA_B_MM = 1.858
MCS_A = 0.1649
MCS_EXP = 0.6263
STRAGGLING_FACTOR = 1.0
LAYER_SPACING_MM = 3.0
# absolute calibration: our dose per unit weight = pyRadPlan's (Generic machines), so stored
# weights and the reference engine's weights mean the same thing
PHOTON_GY_PER_WEIGHT = 1.167
# protons: matRad's 1.602e-2 Gy mm^2 per (MeV cm^2/g), x 10 for our MeV/mm
PROTON_GY_PER_WEIGHT = 0.16022


@dataclass
class _BeamSetup:
    grid: BevGrid
    pixel_to_bixel: torch.Tensor  # (nu, nv) long, -1 outside every bixel
    n_bixels: int
    spot_pixels: np.ndarray  # (n_bixels, 2) BEV pixel index of each bixel centre
    layer_ranges: np.ndarray  # protons: (n_layers,) ranges in mm WET
    active: np.ndarray  # protons: (n_layers, n_bixels) bool


@dataclass
class SpotList:
    """Explicit beamlets of one beam: isocentre-plane (u, v) in mm and, for protons, the
    water-equivalent range in mm (used to recompute another engine's beamlets)."""

    u_mm: np.ndarray
    v_mm: np.ndarray
    range_mm: np.ndarray


@dataclass
class _VoxelGeometry:
    """Where the dose is evaluated: selected CT voxels and their BEV coordinates per beam."""

    index: torch.Tensor  # (M,) flat CT indices
    bev: list[torch.Tensor]  # per beam (M, 3): u, v, t


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


def _blur2d(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (..., nu, nv) maps as two small matrix products."""
    nu, nv = image.shape[-2:]
    bu = torch.as_tensor(_blur_matrix_np(nu, round(sigma_px, 4)), dtype=image.dtype,
                         device=image.device)
    bv = torch.as_tensor(_blur_matrix_np(nv, round(sigma_px, 4)), dtype=image.dtype,
                         device=image.device)
    return bu @ image @ bv.T


def proton_spot_sigma_mm(range_mm: float) -> float:
    """Lateral sigma of one energy layer: initial spot size (+) multiple Coulomb scattering."""
    r = max(range_mm, 1.0)
    sigma_ini = max(SPOT_SIGMA_A_MM - SPOT_SIGMA_B_MM * math.log(r), 1.0)
    sigma_mcs = MCS_A * r**MCS_EXP
    return math.sqrt(sigma_ini**2 + sigma_mcs**2)


def proton_idd_table(ranges_mm: np.ndarray, dz: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Integral depth dose (MeV/mm per proton) on a depth grid for each range."""
    zmax = float(ranges_mm.max()) * 1.15 + 20.0
    z = np.arange(0.0, zmax, dz)
    q = 1.0 / RANGE_P
    coef = 1.0 / (RANGE_P * RANGE_ALPHA**q)  # dE/dx = coef * r^(q-1)
    out = np.zeros((len(ranges_mm), len(z)))
    for i, r_full in enumerate(ranges_mm):
        lo = np.clip(r_full - (z + dz / 2), 0.0, None)
        hi = np.clip(r_full - (z - dz / 2), 0.0, None)
        # cell average of the stopping power over the residual-range interval [lo, hi]
        energy = coef * (hi**q - lo**q) / q
        fluence = np.clip(1.0 - NUCLEAR_LOSS_PER_MM * z, 0.0, None)
        buildup = 1.0 - PROTON_BUILDUP_PER_MM * r_full * np.exp(-z / PROTON_BUILDUP_DEPTH_MM)
        deposit = energy / dz * fluence * buildup * (IDD_GAIN[0] + IDD_GAIN[1] * r_full)
        bortfeld = 0.012 * 10.0 * (r_full / 10.0) ** 0.951
        straggle = math.sqrt(bortfeld**2 + ENERGY_SPREAD_SIGMA_MM**2) * STRAGGLING_FACTOR
        half = math.ceil(4 * straggle / dz)
        kz = np.arange(-half, half + 1) * dz
        kernel = np.exp(-0.5 * (kz / straggle) ** 2)
        # extend the entrance value upstream so the convolution does not dent the entrance
        padded = np.concatenate([np.full(half, deposit[0]), deposit, np.zeros(half)])
        out[i] = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return z, out


class TorchPencilBeamEngine:
    """Fast own engine; ``device`` is a torch device string ("cpu", "cuda")."""

    name = "torch_pb"
    model_version = "2"  # 2: proton depth dose and spot sigma fitted to the Generic machine

    def __init__(self, device: str = "cpu", lateral_step_mm: float | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.lateral_step_mm = lateral_step_mm

    # ---------- set-up (depends only on the planning CT and the plan) ----------
    def _iso(self, plan: Plan, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        if plan.isocenter_mm is not None:
            return np.asarray(plan.isocenter_mm, dtype=np.float64)
        zi, yi, xi = np.nonzero(plan.mask(labels, plan.target))
        return np.array([xi.mean() * spacing[0], yi.mean() * spacing[1], zi.mean() * spacing[2]])

    def _setup(
        self, planning_ct: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        spots: Sequence[SpotList] | None = None,
    ) -> list[_BeamSetup]:
        target = plan.mask(labels, plan.target)
        iso = self._iso(plan, labels, spacing)
        b = plan.bixel_width_mm
        # an odd number of BEV pixels per bixel: a pixel sits on every bixel/spot centre and
        # none on a bixel edge, so bixel squares are symmetric
        n_sub = math.ceil(b / 2.5)
        n_sub += 1 - n_sub % 2
        step = self.lateral_step_mm or b / n_sub
        photon = plan.modality == "photon"
        sad = PHOTON_SAD_MM if photon else PROTON_SAD_MM
        margin = 3.0 * SIGMA_SCATTER_MM if photon else 2 * b + 12.0
        depth_step = min(spacing) / 2.0
        density = hu_to_density_torch(
            torch.as_tensor(planning_ct, dtype=self.dtype, device=self.device)
        )
        target_t = torch.as_tensor(target, dtype=self.dtype, device=self.device)
        setups = []
        for n_beam, beam in enumerate(plan.beams):
            grid = make_bev_grid(
                planning_ct.shape, spacing, iso, beam.gantry_deg, beam.couch_deg, sad, target,
                margin, step, depth_step, b,
            )
            pts = grid.points()
            in_target = sample_volume(target_t, pts, spacing) > 0.5
            hit = in_target.any(dim=2).cpu().numpy()
            # lattice of bixels (centres at integer multiples of b) whose square sees target
            nu, nv = hit.shape
            ku = np.round(grid.u / b).astype(int)
            kv = np.round(grid.v / b).astype(int)
            cell_hit: dict[tuple[int, int], bool] = {}
            for i in range(nu):
                for j in range(nv):
                    if hit[i, j]:
                        cell_hit[(ku[i], kv[j])] = True
            cells = sorted(cell_hit)
            given = spots[n_beam] if spots is not None else None
            if given is not None:
                cells = sorted({(round(u / b), round(v / b)) for u, v in zip(
                    given.u_mm, given.v_mm, strict=True)})
            cell_index = {c: n for n, c in enumerate(cells)}
            p2b = np.full((nu, nv), -1, dtype=np.int64)
            for i in range(nu):
                for j in range(nv):
                    p2b[i, j] = cell_index.get((ku[i], kv[j]), -1)
            centres = np.array(
                [[int(np.argmin(np.abs(grid.u - cu * b))), int(np.argmin(np.abs(grid.v - cv * b)))]
                 for cu, cv in cells]
            ).reshape(-1, 2)
            ranges = np.zeros(0)
            active = np.zeros((0, len(cells)), dtype=bool)
            if not photon and given is not None:
                ranges = np.unique(np.round(given.range_mm, 3))
                active = np.zeros((len(ranges), len(cells)), dtype=bool)
                for u, v, r in zip(given.u_mm, given.v_mm, given.range_mm, strict=True):
                    active[np.searchsorted(ranges, round(r, 3)),
                           cell_index[(round(u / b), round(v / b))]] = True
            elif not photon and cells:
                wet = self._wet(density, grid, spacing)  # (nu, nv, nt)
                tw = torch.where(in_target, wet, torch.full_like(wet, math.nan)).cpu().numpy()
                ci, cj = centres[:, 0], centres[:, 1]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # rays that miss: all-NaN
                    lo = np.nanmin(tw[ci, cj], axis=1)
                    hi = np.nanmax(tw[ci, cj], axis=1)
                # a spot's central ray may miss the target at the edge: use the global span
                glo, ghi = np.nanmin(tw), np.nanmax(tw)
                lo = np.where(np.isfinite(lo), lo, glo)
                hi = np.where(np.isfinite(hi), hi, ghi)
                ranges = np.arange(
                    math.floor((glo - LAYER_SPACING_MM) / LAYER_SPACING_MM) * LAYER_SPACING_MM,
                    ghi + 2 * LAYER_SPACING_MM, LAYER_SPACING_MM,
                )
                ranges = ranges[ranges > 5.0]
                active = (ranges[:, None] >= lo[None, :] - LAYER_SPACING_MM) & (
                    ranges[:, None] <= hi[None, :] + LAYER_SPACING_MM
                )
            setups.append(
                _BeamSetup(grid, torch.as_tensor(p2b, device=self.device), len(cells),
                           centres, ranges, active)
            )
        return setups

    def _wet(self, density: torch.Tensor, grid: BevGrid, spacing: Sequence[float]) -> torch.Tensor:
        """Water-equivalent depth (mm) at every BEV sample, mid-step."""
        rho = sample_volume(density, grid.points(), spacing, fill=0.0).clamp_(min=0.0)
        steps = torch.as_tensor(grid.step_lengths(), dtype=self.dtype, device=self.device)
        seg = rho * steps[:, :, None]
        return torch.cumsum(seg, dim=2) - 0.5 * seg

    def n_weights(self, setups: list[_BeamSetup], photon: bool) -> int:
        if photon:
            return sum(s.n_bixels for s in setups)
        return int(sum(s.active.sum() for s in setups))

    # ---------- forward dose ----------
    def _voxels(
        self, shape: Sequence[int], spacing: Sequence[float], setups: list[_BeamSetup],
        mask: np.ndarray,
    ) -> _VoxelGeometry:
        flat = np.flatnonzero(mask)
        coords_all = [s.grid.ct_to_bev_coords(shape, spacing).reshape(-1, 3)[flat] for s in setups]
        return _VoxelGeometry(
            torch.as_tensor(flat, device=self.device),
            [torch.as_tensor(c, dtype=self.dtype, device=self.device) for c in coords_all],
        )

    def _voxel_wet(
        self, ct_hu: np.ndarray, spacing: Sequence[float], setups: list[_BeamSetup],
        vox: _VoxelGeometry,
    ) -> list[torch.Tensor]:
        """Water-equivalent depth of every selected voxel along each beam."""
        density = hu_to_density_torch(torch.as_tensor(ct_hu, dtype=self.dtype, device=self.device))
        return [
            bev_to_ct(self._wet(density, s.grid, spacing), s.grid, c)
            for s, c in zip(setups, vox.bev, strict=True)
        ]

    @staticmethod
    def _lateral_sample(maps: torch.Tensor, grid: BevGrid, uv: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of (K, nu, nv) maps at voxels' (u, v): (K, M)."""

        def norm(values: torch.Tensor, axis: np.ndarray) -> torch.Tensor:
            step = float(axis[1] - axis[0]) if len(axis) > 1 else 1.0
            return 2 * (values - float(axis[0])) / (step * max(len(axis) - 1, 1)) - 1

        g = torch.stack([norm(uv[:, 1], grid.v), norm(uv[:, 0], grid.u)], dim=-1)
        out = F.grid_sample(maps[:, None], g.view(1, 1, -1, 2).expand(maps.shape[0], 1, -1, 2),
                            mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[:, 0, 0, :]

    def _dose(
        self, plan: Plan, setups: list[_BeamSetup], vox: _VoxelGeometry,
        wet: list[torch.Tensor], weights: torch.Tensor,
    ) -> torch.Tensor:
        """Dose at the selected voxels (M,) for ``weights``."""
        dose = torch.zeros(vox.index.shape[0], dtype=self.dtype, device=self.device)
        offset = 0
        for s, coords, d in zip(setups, vox.bev, wet, strict=True):
            grid = s.grid
            h = float(grid.u[1] - grid.u[0]) if len(grid.u) > 1 else 1.0
            if plan.modality == "photon":
                w = weights[offset: offset + s.n_bixels]
                offset += s.n_bixels
                padded = torch.cat([torch.zeros(1, dtype=self.dtype, device=self.device), w])
                fluence = padded[s.pixel_to_bixel + 1]
                maps = torch.stack([_blur2d(fluence, SIGMA_PRIMARY_MM / h),
                                    _blur2d(fluence, SIGMA_SCATTER_MM / h)])
                prim, scat = self._lateral_sample(maps, grid, coords)
                atten = torch.exp(-MU_PER_MM * d)
                f_scat = SCATTER_FRACTION * (1 - torch.exp(-d / SCATTER_BUILDUP_MM))
                depth = (1 - torch.exp(-d / BUILDUP_MM)) * atten
                t = coords[:, 2].clamp(min=1.0)
                lat = (1 - f_scat) * prim + f_scat * scat
                dose = dose + PHOTON_GY_PER_WEIGHT * lat * depth * (grid.sad / t) ** 2
            else:
                n_active = int(s.active.sum())
                w = weights[offset: offset + n_active]
                offset += n_active
                dose = dose + PROTON_GY_PER_WEIGHT * self._proton_dose(s, coords, d, w, h)
        return dose

    def _proton_dose(
        self, s: _BeamSetup, coords: torch.Tensor, wet: torch.Tensor, w: torch.Tensor, h: float
    ) -> torch.Tensor:
        nu, nv = s.pixel_to_bixel.shape
        n_layers = len(s.layer_ranges)
        layer_idx, bix_idx = np.nonzero(s.active)
        spots = torch.zeros((n_layers, nu, nv), dtype=self.dtype, device=self.device)
        li = torch.as_tensor(layer_idx, device=self.device)
        pu = torch.as_tensor(s.spot_pixels[bix_idx, 0], device=self.device)
        pv = torch.as_tensor(s.spot_pixels[bix_idx, 1], device=self.device)
        spots = spots.index_put((li, pu, pv), w, accumulate=True)
        fluence = torch.stack([
            _blur2d(spots[k], proton_spot_sigma_mm(float(r)) / h)
            for k, r in enumerate(s.layer_ranges)
        ]) / (h * h)
        lat = self._lateral_sample(fluence, s.grid, coords)  # (K, M)
        z, idd = proton_idd_table(s.layer_ranges)
        idd_t = torch.as_tensor(idd, dtype=self.dtype, device=self.device)
        dz = float(z[1] - z[0])
        pos = (wet / dz).clamp(0, len(z) - 1.001)
        i0 = pos.floor().long()
        frac = pos - i0
        depth = idd_t[:, i0] * (1 - frac) + idd_t[:, (i0 + 1).clamp(max=len(z) - 1)] * frac
        return (lat * depth).sum(dim=0)

    # ---------- public API ----------
    def compute(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        planning_ct_hu: np.ndarray | None = None,
    ) -> np.ndarray:
        stored = plan.weights.get(self.name)
        if stored is None:
            raise DoseComputationError(
                f"plan has no {self.name!r} weights; optimise it on the CT first"
            )
        setups = self._setup(planning_ct_hu if planning_ct_hu is not None else ct_hu,
                             spacing, plan, labels)
        n = self.n_weights(setups, plan.modality == "photon")
        if n != len(stored):
            raise DoseComputationError(
                f"plan stores {len(stored)} {self.name} weights but the layout has {n}; "
                "re-optimise the plan"
            )
        w = torch.as_tensor(stored, dtype=self.dtype, device=self.device)
        # like matRad, dose is reported only inside the plan's structures (body included)
        inside = np.asarray(labels) > 0
        with torch.no_grad():
            vox = self._voxels(ct_hu.shape, spacing, setups, inside)
            wet = self._voxel_wet(ct_hu, spacing, setups, vox)
            values = self._dose(plan, setups, vox, wet, w)
        out = np.zeros(ct_hu.size, dtype=np.float32)
        out[vox.index.cpu().numpy()] = values.cpu().numpy()
        if not np.all(np.isfinite(out)):
            raise DoseComputationError("dose computation produced non-finite values")
        return out.reshape(ct_hu.shape)

    def compute_spots(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        spots: Sequence[SpotList], weights: Sequence[Sequence[float]],
    ) -> np.ndarray:
        """Dose of explicitly given beamlets (per beam: SpotList and one weight per spot)."""
        setups = self._setup(ct_hu, spacing, plan, labels, spots)
        b = plan.bixel_width_mm
        flat: list[float] = []
        for s, given, w in zip(setups, spots, weights, strict=True):
            cells = {}
            for i in range(s.n_bixels):
                cu = round(float(s.grid.u[s.spot_pixels[i, 0]]) / b)
                cv = round(float(s.grid.v[s.spot_pixels[i, 1]]) / b)
                cells[(cu, cv)] = i
            if plan.modality == "photon":
                vec = np.zeros(s.n_bixels)
                for u, v, x in zip(given.u_mm, given.v_mm, w, strict=True):
                    vec[cells[(round(u / b), round(v / b))]] += x
                flat.extend(vec.tolist())
            else:
                grid_w = np.zeros(s.active.shape)
                for u, v, r, x in zip(given.u_mm, given.v_mm, given.range_mm, w, strict=True):
                    k = int(np.searchsorted(s.layer_ranges, round(r, 3)))
                    grid_w[k, cells[(round(u / b), round(v / b))]] += x
                flat.extend(grid_w[s.active].tolist())
        inside = np.asarray(labels) > 0
        with torch.no_grad():
            vox = self._voxels(ct_hu.shape, spacing, setups, inside)
            wet = self._voxel_wet(ct_hu, spacing, setups, vox)
            values = self._dose(plan, setups, vox, wet, torch.as_tensor(
                flat, dtype=self.dtype, device=self.device))
        out = np.zeros(ct_hu.size, dtype=np.float32)
        out[vox.index.cpu().numpy()] = values.cpu().numpy()
        return out.reshape(ct_hu.shape)

    def optimize(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        iterations: int = 150,
    ) -> list[float]:
        from evaluator.dose.optimize import optimize_weights

        setups = self._setup(ct_hu, spacing, plan, labels)
        n = self.n_weights(setups, plan.modality == "photon")
        sel = np.zeros(labels.shape, dtype=bool)
        for name in [plan.target, *plan.oars]:
            sel |= plan.mask(labels, name)
        with torch.no_grad():
            vox = self._voxels(ct_hu.shape, spacing, setups, sel)
            wet = self._voxel_wet(ct_hu, spacing, setups, vox)
        sub_labels = np.asarray(labels).reshape(-1)[vox.index.cpu().numpy()]

        def dose_fn(w: torch.Tensor) -> torch.Tensor:
            return self._dose(plan, setups, vox, wet, w)

        return optimize_weights(dose_fn, n, plan, sub_labels, self.device, iterations)
