"""Own pencil-beam engines in torch (CPU or CUDA): photons and protons.

Both trace diverging rays through the CT in a beam's-eye-view grid, accumulate radiological
(water-equivalent) depth along each ray, and spread the beamlet fluence laterally with
Gaussian kernels in the isocentre plane:

* photons: matRad's/pyRadPlan's three-component pencil beam (Generic 6 MV machine): depth
  components ``b_c/(b_c - m) (exp(-m d) - exp(-b_c d))`` times lateral profiles, inverse square
  law; each lateral profile is a sum of Gaussian-blurred squares fitted to the machine's
  kernels (``photon_kernel.json``, ``scripts/fit_photon_kernel.py``), evaluated exactly (erf)
  for square bixels of ``plan.bixel_width_mm`` on a lattice through the isocentre.
* protons: an integral depth dose per energy layer computed from the range-energy law
  R = a E^p (stopping power ~ residual range^(1/p - 1)), with nuclear fluence loss and
  range straggling; spots on the same lattice, energy layers every ``LAYER_SPACING_MM`` of
  water-equivalent range covering the (dilated, like matRad) target along each ray of the
  planning CT; lateral
  sigma = initial spot size (+) multiple Coulomb scattering, both fitted to pyRadPlan's
  Generic proton machine (see the constants).

Like matRad, the dose is computed on the plan's dose grid (``plan.dose_grid_mm``, placed as
pyRadPlan places it) and interpolated trilinearly onto the CT grid.  Doses are linear in the
beamlet weights, so optimisation differentiates through them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from evaluator.dose.engines.base import DoseComputationError, StaleWeightsError
from evaluator.dose.engines.geometry import (
    BevGrid,
    bev_coords,
    bev_to_ct,
    make_bev_grid,
    sample_volume,
    sample_volume_on_grid,
)
from evaluator.dose.engines.hlut import hu_to_density_torch
from evaluator.dose.optimize import Influence
from evaluator.dose.plan import Plan, beamlet_count

PHOTON_SAD_MM = 1000.0
PROTON_SAD_MM = 10000.0
# photon model: see photon_kernel.json (machine constants and the fitted lateral profiles)
PHOTON_KERNEL_FILE = Path(__file__).with_name("photon_kernel.json")
PHOTON_MAP_STEP_MM = 1.0  # lateral profile maps (analytic, sampled bilinearly)
SSD_DENSITY_THRESHOLD = 0.05  # first density above this on the central ray = skin
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
# sigma_mcs grows with depth: sigma_mcs(d) = sigma_mcs(0.9 P) * g(d / R); g tabulated at
# d/R = 0, 0.1, ..., 1.0 (median over the Generic machine's energies above 40 mm range)
MCS_DEPTH_PROFILE = (0.0, 0.224, 0.307, 0.375, 0.436, 0.513, 0.613, 0.716, 0.849, 1.022, 1.11)
STRAGGLING_FACTOR = 1.0
POINT_CHUNK = 131072  # evaluation points per forward pass (bounds memory)
# optimisation: explicit dose influence matrix, built in blocks of INFLUENCE_BLOCK entries.
# Photon scatter reaches most optimisation points (60 % of the entries above 1e-5 of each
# bixel's largest), so photons get a dense matrix, exact; protons a sparse one whose beamlet
# columns keep the entries above INFLUENCE_CUTOFF x their largest (0.01 % of the maximum
# dose dropped).  Larger than INFLUENCE_MAX_BYTES (dense: 4 bytes per entry; sparse: ~20
# bytes per kept entry while built) the optimiser runs matrix-free.
INFLUENCE_BLOCK = 1 << 24
INFLUENCE_CUTOFF = 1e-4
INFLUENCE_MAX_BYTES = 1_500_000_000
INFLUENCE_SIGMAS = 5.0  # protons: points beyond 5 sigma of a layer's spots get none of it
# the machine's depth doses were measured with the nozzle 1000 mm before the isocentre; the
# air between nozzle and skin adds 0.0011 mm water-equivalent per mm (matRad/pyRadPlan's
# air offset correction): WEPL += 0.0011 * (SSD + 1000 - SAD)
PROTON_NOZZLE_TO_ISO_MM = 1000.0
AIR_WEPL_PER_MM = 0.0011
LAYER_SPACING_MM = 3.0
PEAK_BEFORE_RANGE_MM = 2.0  # our depth dose peaks ~2 mm before R (R = P + 1.9 mm fitted)
# absolute calibration: our dose per unit weight = pyRadPlan's (Generic machines), so stored
# weights and the reference engine's weights mean the same thing.  Protons: matRad's
# 1.602e-2 Gy mm^2 per (MeV cm^2/g), x 10 for our MeV/mm
PROTON_GY_PER_WEIGHT = 0.16022


@dataclass(frozen=True)
class PhotonKernel:
    """The photon machine: depth components and fitted lateral profiles per SSD."""

    sad_mm: float
    m_per_mm: float
    betas_per_mm: tuple[float, ...]
    penumbra_sigma_mm: float
    lateral_cutoff_mm: float
    scales_mm: tuple[float, ...]
    ssds_mm: np.ndarray  # (n_ssd,)
    coefficients: np.ndarray  # (n_ssd, n_components, n_scales)

    def at_ssd(self, ssd_mm: float) -> np.ndarray:
        """(n_components, n_scales) coefficients, linear in SSD (clamped to the table)."""
        ssd = float(np.clip(ssd_mm, self.ssds_mm[0], self.ssds_mm[-1]))
        k = int(np.clip(np.searchsorted(self.ssds_mm, ssd) - 1, 0, len(self.ssds_mm) - 2))
        f = (ssd - self.ssds_mm[k]) / (self.ssds_mm[k + 1] - self.ssds_mm[k])
        return np.asarray((1 - f) * self.coefficients[k] + f * self.coefficients[k + 1])


@functools.cache
def photon_kernel() -> PhotonKernel:
    data = json.loads(PHOTON_KERNEL_FILE.read_text())
    return PhotonKernel(
        float(data["sad_mm"]), float(data["m_per_mm"]), tuple(data["betas_per_mm"]),
        float(data["penumbra_sigma_mm"]), float(data["lateral_cutoff_mm"]),
        tuple(data["scales_mm"]), np.asarray(data["ssds_mm"], dtype=np.float64),
        np.asarray(data["coefficients"], dtype=np.float64),
    )


def blurred_square(x: torch.Tensor, width: float, sigma: float) -> torch.Tensor:
    """A width-``width`` square (centred at 0) convolved with a Gaussian of ``sigma``."""
    if sigma <= 0:
        return (x.abs() <= width / 2).to(x.dtype)
    s = math.sqrt(2.0) * sigma
    return 0.5 * (torch.erf((x + width / 2) / s) - torch.erf((x - width / 2) / s))


@dataclass
class _BeamSetup:
    grid: BevGrid
    pixel_to_bixel: torch.Tensor  # (nu, nv) long, -1 outside every bixel
    n_bixels: int
    spot_pixels: np.ndarray  # (n_bixels, 2) BEV pixel index of each bixel centre
    layer_ranges: np.ndarray  # protons: (n_layers,) ranges in mm WET
    active: np.ndarray  # protons: (n_layers, n_bixels) bool
    cells: np.ndarray  # (n_bixels, 2) lattice indices (u, v) of the bixel centres (x bixel)
    ssd_mm: float  # source to skin along the central ray (planning CT)
    # weight-independent pieces of the photon profile maps, built on first use
    photon_basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray] | None = (
        None)
    # protons: stacked blur matrices (2 n_layers, n, n) along u and v, built on first use
    proton_blur: tuple[torch.Tensor, torch.Tensor] | None = None
    proton_idd: tuple[float, int, torch.Tensor] | None = None  # depth step, samples, table


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


def _listed_to_layout(
    setups: Sequence[_BeamSetup], plan: Plan, spots: Sequence[SpotList]
) -> np.ndarray:
    """For each listed beamlet (beam by beam), its index in the engine's flat weight layout
    (photons: bixels of each beam; protons: active (layer, spot) pairs, layer-major)."""
    b = plan.bixel_width_mm
    out: list[int] = []
    offset = 0
    for s, given in zip(setups, spots, strict=True):
        cells = {(int(cu), int(cv)): i for i, (cu, cv) in enumerate(s.cells)}
        if plan.modality == "photon":
            out.extend(offset + cells[(round(u / b), round(v / b))]
                       for u, v in zip(given.u_mm, given.v_mm, strict=True))
            offset += s.n_bixels
        else:
            flat = np.cumsum(s.active.ravel()) - 1  # layout position of each active pair
            for u, v, r in zip(given.u_mm, given.v_mm, given.range_mm, strict=True):
                k = int(np.searchsorted(s.layer_ranges, round(r, 3)))
                out.append(offset + int(flat[k * s.active.shape[1]
                                             + cells[(round(u / b), round(v / b))]]))
            offset += int(s.active.sum())
    return np.asarray(out, dtype=np.int64)


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


@dataclass
class _VoxelGeometry:
    """Where the dose is evaluated: points (patient mm) and their BEV coordinates per beam."""

    points: torch.Tensor  # (M, 3) x, y, z mm
    bev: list[torch.Tensor]  # per beam (M, 3): u, v, t


@dataclass
class _DoseGrid:
    """pyRadPlan's dose grid: covers the CT, centred, ``res`` mm (origin = first voxel centre,
    in CT coordinates)."""

    shape: tuple[int, int, int]  # (nz, ny, nx)
    origin: np.ndarray  # (x, y, z) mm
    res: float

    @classmethod
    def for_ct(cls, ct_shape: Sequence[int], spacing: Sequence[float], res: float) -> _DoseGrid:
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

    def points(self, index: np.ndarray) -> np.ndarray:
        """(M, 3) patient coordinates (x, y, z mm) of flat dose-grid indices."""
        k, j, i = np.unravel_index(index, self.shape)
        return np.asarray(np.stack([i, j, k], axis=1) * self.res + self.origin)


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


def proton_spot_sigmas_mm(range_mm: float) -> tuple[float, float]:
    """Initial spot sigma and multiple-Coulomb-scattering sigma at 0.9x the peak depth."""
    r = max(range_mm, 1.0)
    return max(SPOT_SIGMA_A_MM - SPOT_SIGMA_B_MM * math.log(r), 1.0), MCS_A * r**MCS_EXP


def proton_spot_sigma_mm(range_mm: float) -> float:
    """Lateral sigma of one energy layer at 0.9x the peak depth: initial (+) MCS."""
    return math.hypot(*proton_spot_sigmas_mm(range_mm))


def proton_air_offset_mm(ssd_mm: float, sad_mm: float = PROTON_SAD_MM) -> float:
    """Water-equivalent thickness (mm) of the air between the nozzle and the skin."""
    return AIR_WEPL_PER_MM * (ssd_mm + PROTON_NOZZLE_TO_ISO_MM - sad_mm)


def proton_mcs_fraction(depth_over_range: torch.Tensor) -> torch.Tensor:
    """g(d/R)^2 / g(1)^2: where between the entrance and the end-of-range spot variance a
    point at depth d lies (variance is linear in it)."""
    nodes = torch.as_tensor(MCS_DEPTH_PROFILE, dtype=depth_over_range.dtype,
                            device=depth_over_range.device)
    x = (depth_over_range.clamp(0.0, 1.0) * (len(nodes) - 1))
    i0 = x.floor().long().clamp(max=len(nodes) - 2)
    f = x - i0
    g = nodes[i0] * (1 - f) + nodes[i0 + 1] * f
    return (g / nodes[-1]) ** 2


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
    # 4: matRad-like steering (dilated target); 3: matRad photon kernels, dose grid, proton
    # physics; 2: IDD refit
    model_version = "4"

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
        kernel = photon_kernel()
        margin = (kernel.lateral_cutoff_mm + 4 * kernel.penumbra_sigma_mm + b if photon
                  else 2 * b + 12.0)
        depth_step = min(spacing) / 2.0
        density = hu_to_density_torch(
            torch.as_tensor(planning_ct, dtype=self.dtype, device=self.device)
        )
        # like matRad/pyRadPlan, beamlets are steered onto the target dilated by a box of
        # max(voxel, bixel width) in each direction (margin for dose fall-off and robustness)
        if self.device.type == "cpu":  # scipy's filter is O(1) per voxel, pooling O(radius)
            steer_t = torch.as_tensor(steering_target(target, spacing, b), dtype=self.dtype)
        else:
            steer_t = steering_target_t(torch.as_tensor(target, device=self.device), spacing,
                                        b).to(self.dtype)
        steer_pts = torch.nonzero(steer_t > 0.5).flip(1).to(torch.float64) * torch.as_tensor(
            spacing, dtype=torch.float64, device=self.device)  # x, y, z mm
        steer_np = steer_pts.cpu().numpy()
        setups = []
        for n_beam, beam in enumerate(plan.beams):
            grid = make_bev_grid(
                planning_ct.shape, spacing, iso, beam.gantry_deg, beam.couch_deg, sad, steer_np,
                margin, step, depth_step, b,
            )
            ssd = self._ssd(density, grid, spacing)
            nu, nv = len(grid.u), len(grid.v)
            ku = np.round(grid.u / b).astype(int)
            kv = np.round(grid.v / b).astype(int)
            given = spots[n_beam] if spots is not None else None
            if given is not None:
                found = np.round(np.stack([given.u_mm, given.v_mm], axis=1) / b)
            else:
                # the lattice points nearest to the (dilated) target voxels' projections onto
                # the isocentre plane (matRad's ray positions)
                rays = torch.round(bev_coords(grid, steer_pts)[:, :2] / b).long()
                low = rays.min(dim=0).values if len(rays) else torch.zeros(2, dtype=torch.long)
                span = int((rays[:, 1] - low[1]).max()) + 1 if len(rays) else 1
                key = torch.unique((rays[:, 0] - low[0]) * span + (rays[:, 1] - low[1]))
                found = (torch.stack([key // span, key % span], dim=1) + low.to(key.device)
                         ).cpu().numpy()
                # voxels coarser than the bixels leave lattice rows without a projected
                # voxel centre: pad each ray with its neighbours (pyRadPlan's padding, whose
                # offsets run from -floor(voxel / bixel) to floor(voxel / bixel) - 1)
                coarsest = max(float(x) for x in spacing)
                reach = math.floor(coarsest / b)
                if b < coarsest:
                    shifts = np.stack(np.meshgrid(np.arange(-reach, reach),
                                                  np.arange(-reach, reach), indexing="ij"),
                                      axis=-1).reshape(-1, 2)
                    found = (found[:, None, :] + shifts[None, :, :]).reshape(-1, 2)
            # sorted (u, then v) lattice cells, one per ray
            cells_arr = np.unique(found.astype(np.int64).reshape(-1, 2), axis=0)
            cells = [(int(cu), int(cv)) for cu, cv in cells_arr]
            cell_index = {c: n for n, c in enumerate(cells)}
            # BEV pixel -> its bixel (-1 outside every bixel), via a table over the lattice
            p2b = np.full((nu, nv), -1, dtype=np.int64)
            if len(cells):
                first = cells_arr.min(axis=0)
                table = np.full(tuple(cells_arr.max(axis=0) - first + 1), -1, dtype=np.int64)
                table[cells_arr[:, 0] - first[0], cells_arr[:, 1] - first[1]] = np.arange(
                    len(cells))
                iu, iv = ku - first[0], kv - first[1]
                ok_u = (iu >= 0) & (iu < table.shape[0])
                ok_v = (iv >= 0) & (iv < table.shape[1])
                sub = table[np.clip(iu, 0, table.shape[0] - 1)][
                    :, np.clip(iv, 0, table.shape[1] - 1)]
                p2b = np.where(ok_u[:, None] & ok_v[None, :], sub, -1)
            centres = np.stack([
                np.argmin(np.abs(grid.u[None, :] - cells_arr[:, :1] * b), axis=1),
                np.argmin(np.abs(grid.v[None, :] - cells_arr[:, 1:] * b), axis=1),
            ], axis=1).reshape(-1, 2) if len(cells) else np.zeros((0, 2), dtype=np.int64)
            ranges = np.zeros(0)
            active = np.zeros((0, len(cells)), dtype=bool)
            if not photon and given is not None:
                ranges = np.unique(np.round(given.range_mm, 3))
                active = np.zeros((len(ranges), len(cells)), dtype=bool)
                for u, v, r in zip(given.u_mm, given.v_mm, given.range_mm, strict=True):
                    active[np.searchsorted(ranges, round(r, 3)),
                           cell_index[(round(u / b), round(v / b))]] = True
            elif not photon and cells:
                in_target = sample_volume_on_grid(steer_t, grid, spacing) > 0.5
                wet = self._wet(density, grid, spacing) + proton_air_offset_mm(ssd, sad)
                tw = torch.where(in_target, wet, torch.full_like(wet, math.nan)).cpu().numpy()
                ci, cj = centres[:, 0], centres[:, 1]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # rays that miss: all-NaN
                    lo = np.nanmin(tw[ci, cj], axis=1)
                    hi = np.nanmax(tw[ci, cj], axis=1)
                    glo, ghi = np.nanmin(tw), np.nanmax(tw)
                # like matRad: a layer is used on a spot when its Bragg peak
                # (PEAK_BEFORE_RANGE_MM before our R) lies between where the spot's central
                # ray enters and leaves the (dilated) target; a ray that misses gets none
                ranges = np.arange(
                    math.floor((glo + PEAK_BEFORE_RANGE_MM) / LAYER_SPACING_MM)
                    * LAYER_SPACING_MM, ghi + PEAK_BEFORE_RANGE_MM + LAYER_SPACING_MM,
                    LAYER_SPACING_MM,
                ) if np.isfinite(glo) else np.zeros(0)
                ranges = ranges[ranges > 5.0]
                peaks = ranges - PEAK_BEFORE_RANGE_MM
                with np.errstate(invalid="ignore"):
                    active = (peaks[:, None] >= lo[None, :]) & (peaks[:, None] <= hi[None, :])
            setups.append(
                _BeamSetup(grid, torch.as_tensor(p2b, device=self.device), len(cells),
                           centres, ranges, active,
                           cells_arr, ssd)
            )
        return setups

    def _ssd(self, density: torch.Tensor, grid: BevGrid, spacing: Sequence[float]) -> float:
        """Source-to-skin distance along the central ray (first density above threshold)."""
        pts = grid.source[None, :] + grid.t[:, None] * grid.direction[None, :]
        rho = sample_volume(density, pts, spacing, fill=0.0).cpu().numpy()
        hit = np.flatnonzero(rho > SSD_DENSITY_THRESHOLD)
        return float(grid.t[hit[0]]) if len(hit) else float(grid.sad)

    def _wet(self, density: torch.Tensor, grid: BevGrid, spacing: Sequence[float]) -> torch.Tensor:
        """Water-equivalent depth (mm) at every BEV sample, mid-step."""
        rho = sample_volume_on_grid(density, grid, spacing, fill=0.0).clamp_(min=0.0)
        steps = torch.as_tensor(grid.step_lengths(), dtype=self.dtype, device=self.device)
        seg = rho * steps[:, :, None]
        return torch.cumsum(seg, dim=2) - 0.5 * seg

    def n_weights(self, setups: list[_BeamSetup], photon: bool) -> int:
        if photon:
            return sum(s.n_bixels for s in setups)
        return int(sum(s.active.sum() for s in setups))

    # ---------- forward dose ----------
    def _voxels(self, points: np.ndarray, setups: list[_BeamSetup]) -> _VoxelGeometry:
        pts = torch.as_tensor(points, dtype=self.dtype, device=self.device)
        return _VoxelGeometry(pts, [bev_coords(s.grid, pts) for s in setups])

    def _wet_volumes(
        self, ct_hu: np.ndarray, spacing: Sequence[float], setups: list[_BeamSetup]
    ) -> list[torch.Tensor]:
        """Water-equivalent depth on each beam's BEV grid for this CT."""
        density = hu_to_density_torch(torch.as_tensor(ct_hu, dtype=self.dtype, device=self.device))
        return [self._wet(density, s.grid, spacing) for s in setups]

    @staticmethod
    def _point_wet(
        wet_bev: list[torch.Tensor], setups: list[_BeamSetup], vox: _VoxelGeometry
    ) -> list[torch.Tensor]:
        """Water-equivalent depth of every evaluation point along each beam."""
        return [bev_to_ct(wb, s.grid, c) for wb, s, c in zip(wet_bev, setups, vox.bev, strict=True)]

    @staticmethod
    def _lateral_sample(
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

    def _photon_basis(
        self, s: _BeamSetup, b: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """Weight-independent pieces of one beam's photon profile maps, built on first use:
        kernel coefficients at the beam's SSD, the blurred-square profiles of every lattice
        column along u and v per kernel component, and the maps' u and v axes."""
        if s.photon_basis is None:
            cu, cv = s.cells[:, 0], s.cells[:, 1]
            lo_u, lo_v = int(cu.min()), int(cv.min())
            k = photon_kernel()
            coef = torch.as_tensor(k.at_ssd(s.ssd_mm), dtype=self.dtype, device=self.device)
            reach = k.lateral_cutoff_mm + 4 * k.penumbra_sigma_mm + b
            step = PHOTON_MAP_STEP_MM

            def axis(lo: int, hi: int) -> np.ndarray:
                return np.arange(lo * b - reach, hi * b + reach + step / 2, step)

            u_axis, v_axis = axis(lo_u, int(cu.max())), axis(lo_v, int(cv.max()))
            du = (torch.as_tensor(u_axis, dtype=self.dtype, device=self.device)[:, None]
                  - b * torch.arange(lo_u, int(cu.max()) + 1, device=self.device)[None, :])
            dv = (torch.as_tensor(v_axis, dtype=self.dtype, device=self.device)[:, None]
                  - b * torch.arange(lo_v, int(cv.max()) + 1, device=self.device)[None, :])
            # bilinear sampling of the maps adds a variance of step^2/6: take it off
            pen2 = k.penumbra_sigma_mm**2 - step * step / 6.0
            sigmas = [math.sqrt(pen2 + scale**2) for scale in k.scales_mm]
            su = torch.stack([blurred_square(du, b, sg) for sg in sigmas])  # (K, nu, ncu)
            sv = torch.stack([blurred_square(dv, b, sg) for sg in sigmas])  # (K, nv, ncv)
            s.photon_basis = (coef, su, sv, u_axis, v_axis)
        return s.photon_basis

    def _photon_maps(
        self, s: _BeamSetup, w: torch.Tensor, b: float
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Lateral profile maps (n_components, nu, nv) of one beam's bixel weights ``w`` on
        a fine isocentre-plane grid, and its u and v axes."""
        cu, cv = s.cells[:, 0], s.cells[:, 1]
        lo_u, lo_v = int(cu.min()), int(cv.min())
        coef, su, sv, u_axis, v_axis = self._photon_basis(s, b)
        lattice = torch.zeros((su.shape[2], sv.shape[2]), dtype=self.dtype, device=self.device)
        lattice = lattice.index_put(
            (torch.as_tensor(cu - lo_u, device=self.device),
             torch.as_tensor(cv - lo_v, device=self.device)), w, accumulate=True)
        maps = su @ lattice @ sv.transpose(1, 2)  # (K, nu, nv)
        lateral = torch.einsum("ck,kuv->cuv", coef, maps)
        return lateral, u_axis, v_axis

    @staticmethod
    def _photon_depth(
        s: _BeamSetup, coords: torch.Tensor, wet: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The depth components (C, M) at the points' water-equivalent depths and the inverse
        square law (SAD / distance from the source)^2 (M,)."""
        k = photon_kernel()
        m = k.m_per_mm
        d = wet.clamp(min=0.0)
        depth = torch.stack([
            beta / (beta - m) * (torch.exp(-m * d) - torch.exp(-beta * d))
            for beta in k.betas_per_mm
        ])
        sad = s.grid.sad
        r2 = coords[:, 0] ** 2 + coords[:, 1] ** 2
        geo = coords[:, 2].clamp(min=1.0) * torch.sqrt(1 + r2 / sad**2)
        return depth, (sad / geo) ** 2

    @staticmethod
    def _proton_scale(s: _BeamSetup, coords: torch.Tensor) -> torch.Tensor:
        """Gy per weight and per unit of the (isocentre-plane) lateral profile at the points:
        like matRad, spot profiles are normalised per physical area at the voxel's depth,
        (SAD / t)^2."""
        return PROTON_GY_PER_WEIGHT * (s.grid.sad / coords[:, 2].clamp(min=1.0)) ** 2

    def _photon_dose(
        self, s: _BeamSetup, coords: torch.Tensor, wet: torch.Tensor, w: torch.Tensor, b: float
    ) -> torch.Tensor:
        maps, u_axis, v_axis = self._photon_maps(s, w, b)
        lat = self._lateral_sample(maps, u_axis, v_axis, coords)  # (C, M)
        depth, inverse_square = self._photon_depth(s, coords, wet)
        return (lat * depth).sum(dim=0) * inverse_square

    def _dose(
        self, plan: Plan, setups: list[_BeamSetup], vox: _VoxelGeometry,
        wet: list[torch.Tensor], weights: torch.Tensor,
    ) -> torch.Tensor:
        """Dose at the evaluation points (M,) for ``weights``."""
        dose = torch.zeros(vox.points.shape[0], dtype=self.dtype, device=self.device)
        offset = 0
        for s, coords, d in zip(setups, vox.bev, wet, strict=True):
            grid = s.grid
            h = float(grid.u[1] - grid.u[0]) if len(grid.u) > 1 else 1.0
            if plan.modality == "photon":
                w = weights[offset: offset + s.n_bixels]
                offset += s.n_bixels
                dose = dose + self._photon_dose(s, coords, d, w, plan.bixel_width_mm)
            else:
                n_active = int(s.active.sum())
                w = weights[offset: offset + n_active]
                offset += n_active
                dose = dose + self._proton_scale(s, coords) * self._proton_dose(
                    s, coords, d, w, h)
        return dose

    def _proton_tables(
        self, s: _BeamSetup, h: float
    ) -> tuple[torch.Tensor, torch.Tensor, float, int, torch.Tensor]:
        """Weight-independent pieces of one beam's proton model, built on first use: the
        stacked blur matrices along u and v (entrance sigma of every layer, then its
        end-of-range sigma) and the depth-dose table of its layers."""
        nu, nv = s.pixel_to_bixel.shape
        if s.proton_blur is None:
            def blur_px(sigma: float) -> float:
                # bilinear sampling of the map adds a variance of h^2/6: take it off the blur
                return math.sqrt(max(sigma**2 - h * h / 6.0, (0.5 * h) ** 2)) / h

            lo, hi = [], []
            for r in s.layer_ranges:
                sigma_ini, sigma_mcs = proton_spot_sigmas_mm(float(r))
                lo.append(blur_px(sigma_ini))
                hi.append(blur_px(math.hypot(sigma_ini, sigma_mcs * MCS_DEPTH_PROFILE[-1])))

            def stack(n: int) -> torch.Tensor:
                return torch.as_tensor(
                    np.stack([_blur_matrix_np(n, round(x, 4)) for x in lo + hi]).reshape(-1, n, n),
                    dtype=self.dtype, device=self.device)

            s.proton_blur = (stack(nu), stack(nv))
        if s.proton_idd is None:
            z, idd = proton_idd_table(s.layer_ranges)
            s.proton_idd = (float(z[1] - z[0]), len(z),
                            torch.as_tensor(idd, dtype=self.dtype, device=self.device))
        return (*s.proton_blur, *s.proton_idd)

    def _proton_depth(
        self, s: _BeamSetup, wet: torch.Tensor, dz: float, n_z: int, idd_t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per layer at each point: depth dose (K, M) and the weight of the end-of-range
        lateral Gaussian (K, M)."""
        wet = wet + proton_air_offset_mm(s.ssd_mm, s.grid.sad)
        ranges = torch.as_tensor(s.layer_ranges, dtype=self.dtype, device=self.device)
        mix = proton_mcs_fraction(wet[None, :] / ranges[:, None])  # (K, M)
        pos = (wet / dz).clamp(0, n_z - 1.001)
        i0 = pos.floor().long()
        frac = pos - i0
        depth = idd_t[:, i0] * (1 - frac) + idd_t[:, (i0 + 1).clamp(max=n_z - 1)] * frac
        return depth, mix

    def _proton_dose(
        self, s: _BeamSetup, coords: torch.Tensor, wet: torch.Tensor, w: torch.Tensor, h: float
    ) -> torch.Tensor:
        """Sum over energy layers of IDD(WEPL) x lateral profile.  The spot variance grows
        from sigma_ini^2 at the entrance to sigma_ini^2 + sigma_mcs(R)^2 at the end of range;
        the profile at depth d mixes the two Gaussians with the weight that gives exactly
        that depth's variance."""
        nu, nv = s.pixel_to_bixel.shape
        n_layers = len(s.layer_ranges)
        layer_idx, bix_idx = np.nonzero(s.active)
        spots = torch.zeros((n_layers, nu, nv), dtype=self.dtype, device=self.device)
        li = torch.as_tensor(layer_idx, device=self.device)
        pu = torch.as_tensor(s.spot_pixels[bix_idx, 0], device=self.device)
        pv = torch.as_tensor(s.spot_pixels[bix_idx, 1], device=self.device)
        spots = spots.index_put((li, pu, pv), w, accumulate=True)
        bu, bv, dz, n_z, idd_t = self._proton_tables(s, h)
        # every layer's map blurred with its entrance (lo) and end-of-range (hi) sigma
        maps = bu @ torch.cat([spots, spots]) @ bv.transpose(1, 2) / (h * h)
        lat = self._lateral_sample(maps, s.grid.u, s.grid.v, coords)  # (2K, M)
        depth, mix = self._proton_depth(s, wet, dz, n_z, idd_t)
        lateral = lat[:n_layers] * (1 - mix) + lat[n_layers:] * mix
        return (lateral * depth).sum(dim=0)

    # ---------- explicit influence matrix (optimisation) ----------
    @staticmethod
    def _sample_rows(table: torch.Tensor, axis: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        """Rows of ``table`` (n, P), indexed by the map pixels along ``axis``, interpolated
        linearly at positions ``x`` (M,) like :meth:`_lateral_sample` (zero outside): (M, P).
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

    def _beam_columns(
        self, plan: Plan, s: _BeamSetup, coords: torch.Tensor, wet: torch.Tensor,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor | None, torch.Tensor]]:
        """One beam's influence columns (dose per unit weight at the points, exactly the model
        of :meth:`_dose`) in blocks: (weight indices within the beam, the indices of the
        points the block covers or None for all, (points, weights) block).  Points a block
        leaves out get nothing from its beamlets."""
        if plan.modality == "photon":
            coef, su, sv, u_axis, v_axis = self._photon_basis(s, plan.bixel_width_mm)
            depth, inverse_square = self._photon_depth(s, coords, wet)
            # per kernel component: sum over depth components of coef x depth, inverse square
            factor = torch.einsum("ck,cm->km", coef, depth) * inverse_square
            cu = torch.as_tensor(s.cells[:, 0] - int(s.cells[:, 0].min()), device=self.device)
            cv = torch.as_tensor(s.cells[:, 1] - int(s.cells[:, 1].min()), device=self.device)
            rows = [(self._sample_rows(su[i], u_axis, coords[:, 0]),
                     self._sample_rows(sv[i], v_axis, coords[:, 1])) for i in range(len(su))]
            chunk = max(1, INFLUENCE_BLOCK // max(coords.shape[0], 1))
            for start in range(0, s.n_bixels, chunk):
                j = slice(start, min(start + chunk, s.n_bixels))
                block = factor[0][:, None] * rows[0][0][:, cu[j]] * rows[0][1][:, cv[j]]
                for i in range(1, len(rows)):
                    block += factor[i][:, None] * rows[i][0][:, cu[j]] * rows[i][1][:, cv[j]]
                yield np.arange(j.start, j.stop), None, block
            return
        h = float(s.grid.u[1] - s.grid.u[0]) if len(s.grid.u) > 1 else 1.0
        bu, bv, dz, n_z, idd_t = self._proton_tables(s, h)
        depth, mix = self._proton_depth(s, wet, dz, n_z, idd_t)
        scale = self._proton_scale(s, coords) / (h * h)
        n_layers = len(s.layer_ranges)
        layer_idx, bix_idx = np.nonzero(s.active)  # the layout's (layer-major) order
        for layer in range(n_layers):
            mine = np.flatnonzero(layer_idx == layer)
            if len(mine) == 0:
                continue
            spot_px = s.spot_pixels[bix_idx[mine]]
            # the layer reaches the points before the end of its depth dose and within
            # INFLUENCE_SIGMAS of its widest (end-of-range) Gaussian around its spots
            sigma_ini, sigma_mcs = proton_spot_sigmas_mm(float(s.layer_ranges[layer]))
            reach = INFLUENCE_SIGMAS * math.hypot(sigma_ini, sigma_mcs * MCS_DEPTH_PROFILE[-1]) + h
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
            lo_u, hi_u = (self._sample_rows(bu[i], s.grid.u, uv[:, 0])
                          for i in (layer, layer + n_layers))
            lo_v, hi_v = (self._sample_rows(bv[i], s.grid.v, uv[:, 1])
                          for i in (layer, layer + n_layers))
            c = scale[points] * depth[layer, points]
            c_hi = (c * mix[layer, points])[:, None]
            c_lo = c[:, None] - c_hi
            chunk = max(1, INFLUENCE_BLOCK // int(points.numel()))
            for start in range(0, len(mine), chunk):
                j = slice(start, min(start + chunk, len(mine)))
                block = (c_lo * lo_u[:, pu[j]] * lo_v[:, pv[j]]
                         + c_hi * hi_u[:, pu[j]] * hi_v[:, pv[j]])
                yield mine[j], points, block

    def influence_matrix(
        self, plan: Plan, setups: list[_BeamSetup], vox: _VoxelGeometry, wet: list[torch.Tensor],
        order: torch.Tensor | None = None, cutoff: float = INFLUENCE_CUTOFF,
        max_bytes: int | None = None,
    ) -> Influence | None:
        """The dose at the points per unit weight of every beamlet (points x weights), in the
        engine's weight layout (``_dose(w) == matrix @ w``) or, with ``order`` (the layout
        index of each column, a permutation), in that order.  Photons: dense and exact;
        protons: sparse, each beamlet's column keeping the entries above ``cutoff`` x its
        largest (like the lateral cut-off of matRad's dose influence matrix).  None when it
        would take more than ``max_bytes`` (default ``INFLUENCE_MAX_BYTES``)."""
        budget = INFLUENCE_MAX_BYTES if max_bytes is None else max_bytes
        photon = plan.modality == "photon"
        n_points = vox.points.shape[0]
        n = self.n_weights(setups, photon)
        offsets = np.cumsum([0] + [s.n_bixels if photon else int(s.active.sum())
                                   for s in setups])
        with torch.no_grad():
            if photon:
                if 4 * n_points * n > budget:
                    return None
                dense = torch.zeros((n_points, n), dtype=self.dtype, device=self.device)
                for s, coords, d, offset in zip(setups, vox.bev, wet, offsets, strict=False):
                    for index, _, block in self._beam_columns(plan, s, coords, d):
                        dense[:, int(offset) + index[0]: int(offset) + index[-1] + 1] = block
                return Influence.from_dense(dense if order is None else dense[:, order])
            point_idx, weight_idx, vals = [], [], []
            nnz = 0
            for s, coords, d, offset in zip(setups, vox.bev, wet, offsets, strict=False):
                for index, points, block in self._beam_columns(plan, s, coords, d):
                    keep = block > cutoff * block.amax(dim=0, keepdim=True)
                    r, c = torch.nonzero(keep, as_tuple=True)
                    nnz += int(r.numel())
                    if 20 * nnz > budget:
                        return None
                    point_idx.append(r if points is None else points[r])
                    weight_idx.append(torch.as_tensor(int(offset) + index, device=self.device)[c])
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

    # ---------- public API ----------
    def _on_ct_grid(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        setups: list[_BeamSetup], weights: torch.Tensor,
        wet_bev: list[torch.Tensor] | None = None,
    ) -> np.ndarray:
        """Dose on the plan's dose grid, interpolated (trilinear) onto the CT grid; like
        matRad, reported only inside the plan's structures (body included).  ``wet_bev``:
        this CT's water-equivalent depths per beam, when already computed."""
        inside = np.asarray(labels) > 0
        grid = _DoseGrid.for_ct(ct_hu.shape, spacing, plan.dose_grid_mm)
        mats = [grid.interpolation(a, ct_hu.shape[2 - a], float(spacing[a]), self.device,
                                   self.dtype) for a in range(3)]  # x, y, z
        # dose-grid voxels that any inside CT voxel interpolates from
        m = torch.as_tensor(inside, dtype=self.dtype, device=self.device)
        m = torch.einsum("zyx,xi->zyi", m, (mats[0] > 0).to(self.dtype))
        m = torch.einsum("zyi,yj->zji", m, (mats[1] > 0).to(self.dtype))
        m = torch.einsum("zji,zk->kji", m, (mats[2] > 0).to(self.dtype))
        needed = np.flatnonzero(m.cpu().numpy().reshape(-1) > 0)
        with torch.no_grad():
            if wet_bev is None:
                wet_bev = self._wet_volumes(ct_hu, spacing, setups)
            coarse = torch.zeros(int(np.prod(grid.shape)), dtype=self.dtype, device=self.device)
            for start in range(0, len(needed), POINT_CHUNK):
                part = needed[start: start + POINT_CHUNK]
                vox = self._voxels(grid.points(part), setups)
                wet = self._point_wet(wet_bev, setups, vox)
                coarse[torch.as_tensor(part, device=self.device)] = self._dose(
                    plan, setups, vox, wet, weights)
            d = coarse.view(grid.shape)
            d = torch.einsum("kji,xi->kjx", d, mats[0])
            d = torch.einsum("kjx,yj->kyx", d, mats[1])
            d = torch.einsum("kyx,zk->zyx", d, mats[2])
        out = d.cpu().numpy().astype(np.float32)
        out[~inside] = 0.0
        if not np.all(np.isfinite(out)):
            raise DoseComputationError("dose computation produced non-finite values")
        return out

    def compute(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        planning_ct_hu: np.ndarray | None = None,
    ) -> np.ndarray:
        stored = plan.weights.get(self.name)
        if stored is None:
            raise DoseComputationError(
                f"plan has no {self.name!r} weights; optimise it on the CT first"
            )
        spots = plan_spots(plan)
        setups = self._setup(planning_ct_hu if planning_ct_hu is not None else ct_hu,
                             spacing, plan, labels, spots)
        n = beamlet_count(plan) if spots is not None else self.n_weights(
            setups, plan.modality == "photon")
        if n != len(stored):
            raise StaleWeightsError(
                f"plan stores {len(stored)} {self.name} weights but the "
                f"{'listed beamlets are' if spots is not None else 'layout has'} {n}; "
                "re-optimise the plan"
            )
        w = torch.as_tensor(stored, dtype=self.dtype, device=self.device)
        if spots is not None:
            w = self._scatter(setups, plan, spots, w)
        return self._on_ct_grid(ct_hu, spacing, plan, labels, setups, w)

    def beamlets(
        self, planning_ct: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray
    ) -> list[dict[str, list[float]]]:
        """This engine's own steering on the planning CT, as the plan's ``beamlets`` list (in
        the order of its flat weights): freezes the layout into the plan file."""
        setups = self._setup(planning_ct, spacing, plan, labels)
        b = plan.bixel_width_mm
        out = []
        for s in setups:
            cu, cv = s.cells[:, 0] * b, s.cells[:, 1] * b
            if plan.modality == "photon":
                out.append({"u_mm": cu.tolist(), "v_mm": cv.tolist()})
            else:
                layer, spot = np.nonzero(s.active)  # layer-major, like the weights
                out.append({"u_mm": cu[spot].tolist(), "v_mm": cv[spot].tolist(),
                            "range_mm": s.layer_ranges[layer].tolist()})
        return out

    def _scatter(
        self, setups: list[_BeamSetup], plan: Plan, spots: Sequence[SpotList], w: torch.Tensor
    ) -> torch.Tensor:
        """Weights listed per explicit beamlet (beam by beam) -> the engine's flat layout."""
        index = torch.as_tensor(_listed_to_layout(setups, plan, spots), device=self.device)
        n = self.n_weights(setups, plan.modality == "photon")
        return torch.zeros(n, dtype=w.dtype, device=w.device).index_add(0, index, w)

    def compute_spots(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        spots: Sequence[SpotList], weights: Sequence[Sequence[float]],
    ) -> np.ndarray:
        """Dose of explicitly given beamlets (per beam: SpotList and one weight per spot)."""
        setups = self._setup(ct_hu, spacing, plan, labels, spots)
        flat = np.concatenate([np.asarray(w, dtype=np.float64) for w in weights])
        w_t = self._scatter(setups, plan, spots,
                            torch.as_tensor(flat, dtype=self.dtype, device=self.device))
        return self._on_ct_grid(ct_hu, spacing, plan, labels, setups, w_t)

    def optimize(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        iterations: int | None = None,
    ) -> list[float]:
        """Weights optimised, like pyRadPlan, on the dose-grid voxels of the target and the
        OARs (structures resampled nearest-neighbour onto the dose grid); then scaled so the
        mean target dose on the CT grid (the reported dose) is the prescription."""
        from evaluator.dose.optimize import optimize_weights

        spots = plan_spots(plan)
        setups = self._setup(ct_hu, spacing, plan, labels, spots)
        n = n_layout = self.n_weights(setups, plan.modality == "photon")
        index = None
        if spots is not None:  # optimise the weights of the listed beamlets
            index = torch.as_tensor(_listed_to_layout(setups, plan, spots), device=self.device)
            n = beamlet_count(plan)
        plan.check_structures(labels)
        grid = _DoseGrid.for_ct(ct_hu.shape, spacing, plan.dose_grid_mm)
        on_grid = grid.nearest_labels(np.asarray(labels), spacing)
        wanted = [plan.structures[name] for name in [plan.target, *plan.oars]]
        flat = np.flatnonzero(np.isin(on_grid, wanted))
        with torch.no_grad():
            vox = self._voxels(grid.points(flat), setups)
            wet_bev = self._wet_volumes(ct_hu, spacing, setups)
            wet = self._point_wet(wet_bev, setups, vox)
        sub_labels = on_grid.reshape(-1)[flat]
        present = set(np.unique(sub_labels).tolist())
        if plan.structures[plan.target] not in present:
            raise DoseComputationError(
                f"the target {plan.target!r} has no voxel on the {plan.dose_grid_mm} mm dose "
                "grid; use a finer dose_grid_mm")
        # an OAR smaller than a dose-grid voxel cannot be constrained (pyRadPlan: the same)
        objective_plan = dataclasses.replace(
            plan, oars=[o for o in plan.oars if plan.structures[o] in present])

        def layout(w: torch.Tensor) -> torch.Tensor:
            if index is None:
                return w
            return torch.zeros(n_layout, dtype=w.dtype, device=w.device).index_add(0, index, w)

        def dose_fn(w: torch.Tensor) -> torch.Tensor:
            return self._dose(plan, setups, vox, wet, layout(w))

        # like pyRadPlan: the dose influence matrix of the optimisation voxels, once (each
        # iteration is then two sparse products); matrix-free when it would be too large
        influence = self.influence_matrix(plan, setups, vox, wet, order=index)
        w = optimize_weights(dose_fn, n, objective_plan, sub_labels, self.device, iterations,
                             self.dtype, influence=influence)
        w_t = torch.as_tensor(w, dtype=self.dtype, device=self.device)
        dose = self._on_ct_grid(ct_hu, spacing, plan, labels, setups, layout(w_t), wet_bev)
        mean = float(dose[plan.mask(labels, plan.target)].mean())
        if not mean > 0:
            raise DoseComputationError("the optimised plan delivers no dose to the target")
        return [x * plan.prescription_gy / mean for x in w]
