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
  sigma = initial spot size (+) multiple Coulomb scattering (~2.2 % of the range).

Doses are linear in the beamlet weights, so optimisation differentiates through them.
"""

from __future__ import annotations

import math
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
# photon model (6 MV-like, fitted by eye to a generic 6 MV depth-dose and penumbra)
BUILDUP_MM = 5.0
MU_PER_MM = 0.0050
SIGMA_PRIMARY_MM = 2.8
SIGMA_SCATTER_MM = 18.0
SCATTER_FRACTION = 0.10
# proton model
RANGE_ALPHA = 0.0022 * 10.0  # mm / MeV^p (R = a E^p, water)
RANGE_P = 1.77
NUCLEAR_LOSS_PER_MM = 0.0012
SPOT_SIGMA_MM = 3.0
MCS_FRACTION = 0.022
LAYER_SPACING_MM = 3.0


@dataclass
class _BeamSetup:
    grid: BevGrid
    ct_coords: torch.Tensor  # (nz, ny, nx, 3) BEV coordinates of every CT voxel
    pixel_to_bixel: torch.Tensor  # (nu, nv) long, -1 outside every bixel
    n_bixels: int
    spot_pixels: np.ndarray  # (n_bixels, 2) BEV pixel index of each bixel centre
    layer_ranges: np.ndarray  # protons: (n_layers,) ranges in mm WET
    active: np.ndarray  # protons: (n_layers, n_bixels) bool


def _gauss_kernel(sigma_px: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3.5 * sigma_px))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / max(sigma_px, 1e-3)) ** 2)
    return k / k.sum()


def _blur2d(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (..., nu, nv) maps, zero padding."""
    k = _gauss_kernel(sigma_px, image.device, image.dtype)
    r = (len(k) - 1) // 2
    lead = image.shape[:-2]
    x = image.reshape(-1, 1, *image.shape[-2:])
    x = F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return x.reshape(*lead, *image.shape[-2:])


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
        deposit = energy / dz * fluence
        straggle = 0.012 * 10.0 * (r_full / 10.0) ** 0.951 * 1.1
        half = math.ceil(4 * straggle / dz)
        kz = np.arange(-half, half + 1) * dz
        kernel = np.exp(-0.5 * (kz / straggle) ** 2)
        out[i] = np.convolve(deposit, kernel / kernel.sum(), mode="same")
    return z, out


class TorchPencilBeamEngine:
    """Fast own engine; ``device`` is a torch device string ("cpu", "cuda")."""

    name = "torch_pb"

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
        self, planning_ct: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> list[_BeamSetup]:
        target = plan.mask(labels, plan.target)
        iso = self._iso(plan, labels, spacing)
        b = plan.bixel_width_mm
        step = self.lateral_step_mm or b / max(1, round(b / 2.5))
        photon = plan.modality == "photon"
        sad = PHOTON_SAD_MM if photon else PROTON_SAD_MM
        margin = 3.0 * SIGMA_SCATTER_MM if photon else 2 * b + 12.0
        depth_step = min(spacing) / 2.0
        density = hu_to_density_torch(
            torch.as_tensor(planning_ct, dtype=self.dtype, device=self.device)
        )
        target_t = torch.as_tensor(target, dtype=self.dtype, device=self.device)
        setups = []
        for beam in plan.beams:
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
            cell_index = {c: n for n, c in enumerate(cells)}
            p2b = np.full((nu, nv), -1, dtype=np.int64)
            for i in range(nu):
                for j in range(nv):
                    p2b[i, j] = cell_index.get((ku[i], kv[j]), -1)
            centres = np.array(
                [[int(np.argmin(np.abs(grid.u - cu * b))), int(np.argmin(np.abs(grid.v - cv * b)))]
                 for cu, cv in cells]
            ).reshape(-1, 2)
            coords = torch.as_tensor(
                grid.ct_to_bev_coords(planning_ct.shape, spacing), dtype=self.dtype,
                device=self.device,
            )
            ranges = np.zeros(0)
            active = np.zeros((0, len(cells)), dtype=bool)
            if not photon and cells:
                wet = self._wet(density, grid, spacing)  # (nu, nv, nt)
                tw = torch.where(in_target, wet, torch.full_like(wet, math.nan)).cpu().numpy()
                ci, cj = centres[:, 0], centres[:, 1]
                with np.errstate(all="ignore"):
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
                _BeamSetup(grid, coords, torch.as_tensor(p2b, device=self.device), len(cells),
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
    def _dose(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan,
        setups: list[_BeamSetup], weights: torch.Tensor,
    ) -> torch.Tensor:
        density = hu_to_density_torch(torch.as_tensor(ct_hu, dtype=self.dtype, device=self.device))
        dose = torch.zeros(ct_hu.shape, dtype=self.dtype, device=self.device)
        photon = plan.modality == "photon"
        offset = 0
        for s in setups:
            grid = s.grid
            h = float(grid.u[1] - grid.u[0]) if len(grid.u) > 1 else 1.0
            wet = self._wet(density, grid, spacing)
            if photon:
                w = weights[offset: offset + s.n_bixels]
                offset += s.n_bixels
                padded = torch.cat([torch.zeros(1, dtype=self.dtype, device=self.device), w])
                fluence = padded[s.pixel_to_bixel + 1]
                lateral = (1 - SCATTER_FRACTION) * _blur2d(
                    fluence, SIGMA_PRIMARY_MM / h
                ) + SCATTER_FRACTION * _blur2d(fluence, SIGMA_SCATTER_MM / h)
                depth = (1 - torch.exp(-wet / BUILDUP_MM)) * torch.exp(-MU_PER_MM * wet)
                t = torch.as_tensor(grid.t, dtype=self.dtype, device=self.device)
                bev = lateral[:, :, None] * depth * (grid.sad / t) ** 2
            else:
                n_active = int(s.active.sum())
                w = weights[offset: offset + n_active]
                offset += n_active
                bev = self._proton_bev(s, wet, w, h)
            dose = dose + bev_to_ct(bev, grid, s.ct_coords)
        return dose

    def _proton_bev(
        self, s: _BeamSetup, wet: torch.Tensor, w: torch.Tensor, h: float
    ) -> torch.Tensor:
        nu, nv, _ = wet.shape
        n_layers = len(s.layer_ranges)
        layer_idx, bix_idx = np.nonzero(s.active)
        spots = torch.zeros((n_layers, nu, nv), dtype=self.dtype, device=self.device)
        li = torch.as_tensor(layer_idx, device=self.device)
        pu = torch.as_tensor(s.spot_pixels[bix_idx, 0], device=self.device)
        pv = torch.as_tensor(s.spot_pixels[bix_idx, 1], device=self.device)
        spots = spots.index_put((li, pu, pv), w, accumulate=True)
        z, idd = proton_idd_table(s.layer_ranges)
        idd_t = torch.as_tensor(idd, dtype=self.dtype, device=self.device)
        dz = float(z[1] - z[0])
        pos = (wet / dz).clamp(0, len(z) - 1.001)
        i0 = pos.floor().long()
        frac = pos - i0
        bev = torch.zeros_like(wet)
        for k, r in enumerate(s.layer_ranges):
            if not s.active[k].any():
                continue
            sigma = math.sqrt(SPOT_SIGMA_MM**2 + (MCS_FRACTION * r) ** 2 * 0.9**3)
            fl = _blur2d(spots[k], sigma / h) / (h * h)
            table = idd_t[k]
            depth = table[i0] * (1 - frac) + table[(i0 + 1).clamp(max=len(z) - 1)] * frac
            bev = bev + fl[:, :, None] * depth
        return bev

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
        with torch.no_grad():
            dose = self._dose(ct_hu, spacing, plan, setups, w)
        # like matRad, dose is reported only inside the plan's structures (body included)
        out = dose.cpu().numpy().astype(np.float32) * (np.asarray(labels) > 0)
        if not np.all(np.isfinite(out)):
            raise DoseComputationError("dose computation produced non-finite values")
        return out

    def optimize(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        iterations: int = 150,
    ) -> list[float]:
        from evaluator.dose.optimize import optimize_weights

        setups = self._setup(ct_hu, spacing, plan, labels)
        n = self.n_weights(setups, plan.modality == "photon")

        def dose_fn(w: torch.Tensor) -> torch.Tensor:
            return self._dose(ct_hu, spacing, plan, setups, w)

        return optimize_weights(dose_fn, n, plan, labels, self.device, iterations)
