"""What the photon and proton pencil beams share: set-up of the beams on the planning CT
(isocentre, BEV grid, bixel lattice), rays (skin distance, water-equivalent depth), the
dose-grid / CT-grid plumbing and the public flows (compute, optimise, listed beamlets).

A model (``photon.py``, ``proton.py``) fills in the hooks marked abstract: its source
distance and grid margin, what it adds to a beam's set-up, its flat weight layout, the dose
of one beam, and that beam's columns of the dose influence matrix.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
import torch

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
from evaluator.dose.engines.torch_pb.dose_grid import DoseGrid
from evaluator.dose.engines.torch_pb.steering import (
    SpotList,
    centre_pixels,
    lattice_cells,
    pixel_to_bixel,
    plan_spots,
    steering_target,
    steering_target_t,
)
from evaluator.dose.optimize import Influence
from evaluator.dose.plan import Plan, beamlet_count

ENGINE_NAME = "torch_pb"
# 9: proton depths of the dose points as pyRadPlan's ray tracer assigns them (its ray
# lattice, each voxel's chord middle; was trilinear between fine rays at the point);
# 8: proton depth doses from the machine's tables (was an analytic fit), spots narrowed like
# pyRadPlan's lateral cut-off;
# 7: proton sigma_ini from the machine's focus table at the beam's SSD (was a fit);
# 6: densities outside the plan's structures ignored (like pyRadPlan), protons traced at
# 16 steps per voxel; 5: proton sigma(depth) from the machine's table, voxel-constant
# density along rays;
# 4: matRad-like steering (dilated target); 3: matRad photon kernels, dose grid, proton
# physics; 2: IDD refit
MODEL_VERSION = "9"
WET_SAMPLING = "nearest"  # density along a ray: each voxel's own value (see _wet)
DEPTH_STEPS_PER_VOXEL = 4  # samples per (smallest) voxel along a ray: nearest sampling
# converges to the exact (Siddon) path integral; each boundary the ray crosses puts the
# depth behind it off by up to half a step times the density step, with the same sign over
# a flat surface (slab: +0.24 mm of depth at 4 steps; protons use more, see the model)
SSD_DENSITY_THRESHOLD = 0.05  # first density above this on the central ray = skin
POINT_CHUNK = 131072  # evaluation points per forward pass (bounds memory)
# optimisation: explicit dose influence matrix, built in blocks of INFLUENCE_BLOCK entries
# (photons dense, protons sparse keeping the entries above INFLUENCE_CUTOFF x each beamlet
# column's largest: see the models).  Larger than INFLUENCE_MAX_BYTES (dense: 4 bytes per
# entry; sparse: ~20 bytes per kept entry while built) the optimiser runs matrix-free.
INFLUENCE_BLOCK = 1 << 24
INFLUENCE_CUTOFF = 1e-4
INFLUENCE_MAX_BYTES = 1_500_000_000

# one block of influence columns: (weight indices, indices of the points it covers or None
# for all, (points, weights) block)
Columns = tuple[np.ndarray, torch.Tensor | None, torch.Tensor]


def patient_mask(plan: Plan, labels: np.ndarray) -> np.ndarray:
    """(z, y, x) bool: the voxels of any of the plan's structures (pyRadPlan's dose
    engines ignore the densities outside them)."""
    return np.isin(np.asarray(labels), list(plan.structures.values()))


@dataclass
class BeamSetup:
    """One beam on the planning CT: its BEV grid and bixel lattice (what both models use)."""

    grid: BevGrid
    pixel_to_bixel: torch.Tensor  # (nu, nv) long, -1 outside every bixel
    n_bixels: int
    spot_pixels: np.ndarray  # (n_bixels, 2) BEV pixel index of each bixel centre
    cells: np.ndarray  # (n_bixels, 2) lattice indices (u, v) of the bixel centres (x bixel)
    ssd_mm: float  # source to skin along the central ray (planning CT)

    @classmethod
    def extend(cls, geo: BeamSetup, **extra: Any) -> Self:
        """A model's beam set-up: ``geo``'s fields plus the model's own."""
        return cls(**{f.name: getattr(geo, f.name) for f in dataclasses.fields(BeamSetup)},
                   **extra)

    def cell_index(self) -> dict[tuple[int, int], int]:
        """Lattice cell (u, v) -> bixel index."""
        return {(int(cu), int(cv)): i for i, (cu, cv) in enumerate(self.cells)}

    def cells_mm(self, bixel: float) -> tuple[np.ndarray, np.ndarray]:
        """Isocentre-plane (u, v) mm of the bixel centres."""
        return self.cells[:, 0] * bixel, self.cells[:, 1] * bixel


@dataclass
class PlanningCT:
    """What a model may need of the planning CT when it sets up a beam."""

    density: torch.Tensor  # (z, y, x) relative density
    steer: torch.Tensor  # (z, y, x) 0/1: the dilated target beamlets are steered onto
    spacing: Sequence[float]
    bixel_mm: float


@dataclass
class VoxelGeometry:
    """Where the dose is evaluated: points (patient mm) and their BEV coordinates per beam."""

    points: torch.Tensor  # (M, 3) x, y, z mm
    bev: list[torch.Tensor]  # per beam (M, 3): u, v, t


BeamT = TypeVar("BeamT", bound=BeamSetup)


class PencilBeamModel(abc.ABC, Generic[BeamT]):
    """One modality's pencil beam on ``device`` ("cpu", "cuda"); weights are flat, beam by
    beam, in the model's layout."""

    name = ENGINE_NAME
    sad_mm: ClassVar[float]  # source to isocentre

    def __init__(self, device: str = "cpu", lateral_step_mm: float | None = None) -> None:
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.lateral_step_mm = lateral_step_mm

    # ---------- the model's hooks ----------
    @abc.abstractmethod
    def _margin_mm(self, bixel: float) -> float:
        """Lateral margin of the BEV grid around the steering target's projection."""

    @abc.abstractmethod
    def _beam(self, geo: BeamSetup, given: SpotList | None, ct: PlanningCT) -> BeamT:
        """The model's set-up of one beam (``given``: the plan's listed beamlets)."""

    @abc.abstractmethod
    def _beam_weights(self, s: BeamT) -> int:
        """How many of the flat weights belong to this beam."""

    @abc.abstractmethod
    def _listed_in_beam(self, s: BeamT, cells: dict[tuple[int, int], int], given: SpotList,
                        bixel: float) -> list[int]:
        """The beam's layout position of each of its listed beamlets (``cells``: lattice
        cell -> bixel index)."""

    @abc.abstractmethod
    def _beam_beamlets(self, s: BeamT, bixel: float) -> dict[str, list[float]]:
        """The beam's beamlets in the plan's ``beamlets`` format, in layout order."""

    @abc.abstractmethod
    def _beam_dose(self, plan: Plan, s: BeamT, coords: torch.Tensor, wet: torch.Tensor,
                   w: torch.Tensor) -> torch.Tensor:
        """Dose at the points (BEV ``coords`` (M, 3), depth ``wet`` (M,)) of one beam's
        weights ``w``."""

    @abc.abstractmethod
    def _beam_columns(self, plan: Plan, s: BeamT, coords: torch.Tensor, wet: torch.Tensor
                      ) -> Iterator[Columns]:
        """One beam's influence columns (dose per unit weight at the points, exactly the
        model of :meth:`_beam_dose`) in blocks; indices within the beam.  Points a block
        leaves out get nothing from its beamlets."""

    @abc.abstractmethod
    def _assemble(self, columns: Iterator[Columns], n_points: int, n: int,
                  order: torch.Tensor | None, cutoff: float, budget: int) -> Influence | None:
        """The influence matrix from all beams' ``columns`` (layout indices), None when it
        would take more than ``budget`` bytes."""

    # ---------- set-up (depends only on the planning CT and the plan) ----------
    def _iso(self, plan: Plan, labels: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        if plan.isocenter_mm is not None:
            return np.asarray(plan.isocenter_mm, dtype=np.float64)
        zi, yi, xi = np.nonzero(plan.mask(labels, plan.target))
        return np.array([xi.mean() * spacing[0], yi.mean() * spacing[1], zi.mean() * spacing[2]])

    def _setup(
        self, planning_ct: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        spots: Sequence[SpotList] | None = None,
    ) -> list[BeamT]:
        target = plan.mask(labels, plan.target)
        iso = self._iso(plan, labels, spacing)
        b = plan.bixel_width_mm
        # an odd number of BEV pixels per bixel: a pixel sits on every bixel/spot centre and
        # none on a bixel edge, so bixel squares are symmetric
        n_sub = math.ceil(b / 2.5)
        n_sub += 1 - n_sub % 2
        step = self.lateral_step_mm or b / n_sub
        depth_step = self._depth_step(spacing, plan)
        density = self._density(planning_ct, patient_mask(plan, labels))
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
        ct = PlanningCT(density, steer_t, spacing, b)
        setups = []
        for n_beam, beam in enumerate(plan.beams):
            grid = make_bev_grid(
                planning_ct.shape, spacing, iso, beam.gantry_deg, beam.couch_deg, self.sad_mm,
                steer_np, self._margin_mm(b), step, depth_step, b,
            )
            given = spots[n_beam] if spots is not None else None
            cells = lattice_cells(grid, b, spacing, steer_pts, given)
            geo = BeamSetup(grid, torch.as_tensor(pixel_to_bixel(grid, cells, b),
                                                  device=self.device),
                            len(cells), centre_pixels(grid, cells, b), cells,
                            self._ssd(density, grid, spacing))
            setups.append(self._beam(geo, given, ct))
        return setups

    def _depth_step(self, spacing: Sequence[float], plan: Plan) -> float:
        """Length (mm) of the steps along a ray."""
        return min(spacing) / DEPTH_STEPS_PER_VOXEL

    def _density(self, ct_hu: np.ndarray, inside: np.ndarray | None) -> torch.Tensor:
        """Relative density of the CT; with ``inside``, zero outside it.  Like pyRadPlan
        (``ignore_outside_densities``, on by default), densities outside the plan's structures
        are ignored: the air around a head holds HU noise (density ~0.01-0.02) over many
        centimetres, which would otherwise add ~0.5 mm of depth and shorten every range."""
        density = hu_to_density_torch(torch.as_tensor(ct_hu, dtype=self.dtype, device=self.device))
        if inside is None:
            return density
        return density * torch.as_tensor(inside, device=self.device).to(self.dtype)

    def _ssd(self, density: torch.Tensor, grid: BevGrid, spacing: Sequence[float]) -> float:
        """Source-to-skin distance along the central ray (first density above threshold)."""
        pts = grid.source[None, :] + grid.t[:, None] * grid.direction[None, :]
        rho = sample_volume(density, pts, spacing, fill=0.0).cpu().numpy()
        hit = np.flatnonzero(rho > SSD_DENSITY_THRESHOLD)
        return float(grid.t[hit[0]]) if len(hit) else float(grid.sad)

    def _wet(self, density: torch.Tensor, grid: BevGrid, spacing: Sequence[float],
             origin: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
        """Water-equivalent depth (mm) at every BEV sample, mid-step.  Like pyRadPlan's
        Siddon trace, a voxel's density holds over the whole voxel (nearest sampling):
        interpolating it would average an sCT's voxel noise away along the ray and make the
        depth, and so the dose, react less to noise than the reference's does."""
        rho = sample_volume_on_grid(density, grid, spacing, fill=0.0, mode=WET_SAMPLING,
                                    origin=origin).clamp_(min=0.0)
        steps = torch.as_tensor(grid.step_lengths(), dtype=self.dtype, device=self.device)
        seg = rho * steps[:, :, None]
        return torch.cumsum(seg, dim=2) - 0.5 * seg

    def n_weights(self, setups: Sequence[BeamT]) -> int:
        return sum(self._beam_weights(s) for s in setups)

    def _listed_to_layout(
        self, setups: Sequence[BeamT], bixel: float, spots: Sequence[SpotList]
    ) -> np.ndarray:
        """For each listed beamlet (beam by beam), its index in the flat weight layout."""
        out: list[int] = []
        offset = 0
        for s, given in zip(setups, spots, strict=True):
            out.extend(offset + i for i in self._listed_in_beam(s, s.cell_index(), given, bixel))
            offset += self._beam_weights(s)
        return np.asarray(out, dtype=np.int64)

    # ---------- forward dose ----------
    def _voxels(self, points: np.ndarray, setups: Sequence[BeamT]) -> VoxelGeometry:
        pts = torch.as_tensor(points, dtype=self.dtype, device=self.device)
        return VoxelGeometry(pts, [bev_coords(s.grid, pts) for s in setups])

    def _wet_volumes(
        self, ct_hu: np.ndarray, spacing: Sequence[float], setups: Sequence[BeamT],
        dose_grid: DoseGrid | None = None, inside: np.ndarray | None = None,
    ) -> list[torch.Tensor]:
        """Water-equivalent depth on each beam's BEV grid for this CT (densities outside
        ``inside`` ignored, see :meth:`_density`); with ``dose_grid``, traced through the
        densities resampled onto it, as pyRadPlan traces (its ``trace_on_dose_grid``: the
        resampling smooths an sCT's noise, the tracing keeps it)."""
        density = self._density(ct_hu, inside)
        if dose_grid is None:
            return [self._wet(density, s.grid, spacing) for s in setups]
        on_grid = dose_grid.resample(density, spacing)
        res = (dose_grid.res,) * 3
        origin = [float(o) for o in dose_grid.origin]
        return [self._wet(on_grid, s.grid, res, origin) for s in setups]

    @staticmethod
    def _point_wet(
        wet_bev: list[torch.Tensor], setups: Sequence[BeamT], vox: VoxelGeometry
    ) -> list[torch.Tensor]:
        """Water-equivalent depth of every evaluation point along each beam."""
        return [bev_to_ct(wb, s.grid, c) for wb, s, c in zip(wet_bev, setups, vox.bev, strict=True)]

    def _dose(
        self, plan: Plan, setups: Sequence[BeamT], vox: VoxelGeometry,
        wet: list[torch.Tensor], weights: torch.Tensor,
    ) -> torch.Tensor:
        """Dose at the evaluation points (M,) for ``weights``."""
        dose = torch.zeros(vox.points.shape[0], dtype=self.dtype, device=self.device)
        offset = 0
        for s, coords, d in zip(setups, vox.bev, wet, strict=True):
            n = self._beam_weights(s)
            dose = dose + self._beam_dose(plan, s, coords, d, weights[offset: offset + n])
            offset += n
        return dose

    def influence_matrix(
        self, plan: Plan, setups: Sequence[BeamT], vox: VoxelGeometry, wet: list[torch.Tensor],
        order: torch.Tensor | None = None, cutoff: float = INFLUENCE_CUTOFF,
        max_bytes: int | None = None,
    ) -> Influence | None:
        """The dose at the points per unit weight of every beamlet (points x weights), in the
        layout (``_dose(w) == matrix @ w``) or, with ``order`` (the layout index of each
        column, a permutation), in that order.  Sparse models keep, per beamlet column, the
        entries above ``cutoff`` x its largest (like the lateral cut-off of matRad's dose
        influence matrix).  None when it would take more than ``max_bytes`` (default
        ``INFLUENCE_MAX_BYTES``)."""
        budget = INFLUENCE_MAX_BYTES if max_bytes is None else max_bytes
        offsets = np.cumsum([0] + [self._beam_weights(s) for s in setups])
        columns = ((int(offset) + index, points, block)
                   for s, coords, d, offset in zip(setups, vox.bev, wet, offsets, strict=False)
                   for index, points, block in self._beam_columns(plan, s, coords, d))
        with torch.no_grad():
            return self._assemble(columns, vox.points.shape[0], self.n_weights(setups), order,
                                  cutoff, budget)

    # ---------- public flows ----------
    def _on_ct_grid(
        self, ct_hu: np.ndarray, spacing: Sequence[float], plan: Plan, labels: np.ndarray,
        setups: Sequence[BeamT], weights: torch.Tensor,
        wet_bev: list[torch.Tensor] | None = None,
    ) -> np.ndarray:
        """Dose on the plan's dose grid, interpolated (trilinear) onto the CT grid; like
        matRad, reported only inside the plan's structures (body included).  ``wet_bev``:
        this CT's water-equivalent depths per beam, when already computed."""
        inside = np.asarray(labels) > 0
        grid = DoseGrid.for_ct(ct_hu.shape, spacing, plan.dose_grid_mm)
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
                wet_bev = self._wet_volumes(ct_hu, spacing, setups, grid,
                                            patient_mask(plan, labels))
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
        n = beamlet_count(plan) if spots is not None else self.n_weights(setups)
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
        """This model's own steering on the planning CT, as the plan's ``beamlets`` list (in
        the order of its flat weights): freezes the layout into the plan file."""
        setups = self._setup(planning_ct, spacing, plan, labels)
        return [self._beam_beamlets(s, plan.bixel_width_mm) for s in setups]

    def _scatter(
        self, setups: Sequence[BeamT], plan: Plan, spots: Sequence[SpotList], w: torch.Tensor
    ) -> torch.Tensor:
        """Weights listed per explicit beamlet (beam by beam) -> the flat layout."""
        index = torch.as_tensor(self._listed_to_layout(setups, plan.bixel_width_mm, spots),
                                device=self.device)
        n = self.n_weights(setups)
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
        n = n_layout = self.n_weights(setups)
        index = None
        if spots is not None:  # optimise the weights of the listed beamlets
            index = torch.as_tensor(self._listed_to_layout(setups, plan.bixel_width_mm, spots),
                                    device=self.device)
            n = beamlet_count(plan)
        plan.check_structures(labels)
        grid = DoseGrid.for_ct(ct_hu.shape, spacing, plan.dose_grid_mm)
        on_grid = grid.nearest_labels(np.asarray(labels), spacing)
        wanted = [plan.structures[name] for name in [plan.target, *plan.oars]]
        flat = np.flatnonzero(np.isin(on_grid, wanted))
        with torch.no_grad():
            vox = self._voxels(grid.points(flat), setups)
            wet_bev = self._wet_volumes(ct_hu, spacing, setups, grid,
                                        patient_mask(plan, labels))
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
