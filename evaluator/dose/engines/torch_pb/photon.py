"""Photon pencil beam: matRad's/pyRadPlan's three-component model (Generic 6 MV machine).

Depth components ``b_c/(b_c - m) (exp(-m d) - exp(-b_c d))`` times lateral profiles, inverse
square law; each lateral profile is a sum of Gaussian-blurred squares fitted to the machine's
kernels (``photon_kernel.json``, ``scripts/fit_photon_kernel.py``), evaluated exactly (erf)
for square bixels of ``plan.bixel_width_mm`` on a lattice through the isocentre.  Scatter
reaches most optimisation points (60 % of the influence entries are above 1e-5 of each
bixel's largest), so the influence matrix is dense and exact.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evaluator.dose.engines.geometry import lateral_sample, sample_rows
from evaluator.dose.engines.torch_pb.common import (
    INFLUENCE_BLOCK,
    BeamSetup,
    Columns,
    PencilBeamModel,
    PlanningCT,
)
from evaluator.dose.engines.torch_pb.steering import SpotList
from evaluator.dose.optimize import Influence
from evaluator.dose.plan import Plan

PHOTON_SAD_MM = 1000.0
# machine constants and the fitted lateral profiles
PHOTON_KERNEL_FILE = Path(__file__).parents[1] / "photon_kernel.json"
PHOTON_MAP_STEP_MM = 1.0  # lateral profile maps (analytic, sampled bilinearly)


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

    def reach_mm(self, bixel: float) -> float:
        """How far beyond a bixel's centre its lateral profile is computed."""
        return self.lateral_cutoff_mm + 4 * self.penumbra_sigma_mm + bixel


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
class PhotonBeam(BeamSetup):
    # weight-independent pieces of the profile maps, built on first use (see _basis)
    basis: tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray] | None = None


class PhotonPencilBeam(PencilBeamModel[PhotonBeam]):
    """Photons: one weight per bixel, beam by beam."""

    sad_mm = PHOTON_SAD_MM

    def _margin_mm(self, bixel: float) -> float:
        return photon_kernel().reach_mm(bixel)

    def _beam(self, geo: BeamSetup, given: SpotList | None, ct: PlanningCT) -> PhotonBeam:
        return PhotonBeam.extend(geo)

    def _beam_weights(self, s: PhotonBeam) -> int:
        return s.n_bixels

    def _listed_in_beam(self, s: PhotonBeam, cells: dict[tuple[int, int], int],
                        given: SpotList, bixel: float) -> list[int]:
        return [cells[(round(u / bixel), round(v / bixel))]
                for u, v in zip(given.u_mm, given.v_mm, strict=True)]

    def _beam_beamlets(self, s: PhotonBeam, bixel: float) -> dict[str, list[float]]:
        cu, cv = s.cells_mm(bixel)
        return {"u_mm": cu.tolist(), "v_mm": cv.tolist()}

    def _basis(
        self, s: PhotonBeam, b: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """Weight-independent pieces of one beam's profile maps, built on first use: kernel
        coefficients at the beam's SSD, the blurred-square profiles of every lattice column
        along u and v per kernel component, and the maps' u and v axes."""
        if s.basis is None:
            cu, cv = s.cells[:, 0], s.cells[:, 1]
            lo_u, lo_v = int(cu.min()), int(cv.min())
            k = photon_kernel()
            coef = torch.as_tensor(k.at_ssd(s.ssd_mm), dtype=self.dtype, device=self.device)
            reach = k.reach_mm(b)
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
            s.basis = (coef, su, sv, u_axis, v_axis)
        return s.basis

    def _maps(
        self, s: PhotonBeam, w: torch.Tensor, b: float
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Lateral profile maps (n_components, nu, nv) of one beam's bixel weights ``w`` on
        a fine isocentre-plane grid, and its u and v axes."""
        cu, cv = s.cells[:, 0], s.cells[:, 1]
        lo_u, lo_v = int(cu.min()), int(cv.min())
        coef, su, sv, u_axis, v_axis = self._basis(s, b)
        lattice = torch.zeros((su.shape[2], sv.shape[2]), dtype=self.dtype, device=self.device)
        lattice = lattice.index_put(
            (torch.as_tensor(cu - lo_u, device=self.device),
             torch.as_tensor(cv - lo_v, device=self.device)), w, accumulate=True)
        maps = su @ lattice @ sv.transpose(1, 2)  # (K, nu, nv)
        lateral = torch.einsum("ck,kuv->cuv", coef, maps)
        return lateral, u_axis, v_axis

    @staticmethod
    def _depth(
        s: PhotonBeam, coords: torch.Tensor, wet: torch.Tensor
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

    def _beam_dose(self, plan: Plan, s: PhotonBeam, coords: torch.Tensor, wet: torch.Tensor,
                   w: torch.Tensor) -> torch.Tensor:
        maps, u_axis, v_axis = self._maps(s, w, plan.bixel_width_mm)
        lat = lateral_sample(maps, u_axis, v_axis, coords)  # (C, M)
        depth, inverse_square = self._depth(s, coords, wet)
        return (lat * depth).sum(dim=0) * inverse_square

    def _beam_columns(self, plan: Plan, s: PhotonBeam, coords: torch.Tensor, wet: torch.Tensor
                      ) -> Iterator[Columns]:
        coef, su, sv, u_axis, v_axis = self._basis(s, plan.bixel_width_mm)
        depth, inverse_square = self._depth(s, coords, wet)
        # per kernel component: sum over depth components of coef x depth, inverse square
        factor = torch.einsum("ck,cm->km", coef, depth) * inverse_square
        cu = torch.as_tensor(s.cells[:, 0] - int(s.cells[:, 0].min()), device=self.device)
        cv = torch.as_tensor(s.cells[:, 1] - int(s.cells[:, 1].min()), device=self.device)
        rows = [(sample_rows(su[i], u_axis, coords[:, 0]), sample_rows(sv[i], v_axis, coords[:, 1]))
                for i in range(len(su))]
        chunk = max(1, INFLUENCE_BLOCK // max(coords.shape[0], 1))
        for start in range(0, s.n_bixels, chunk):
            j = slice(start, min(start + chunk, s.n_bixels))
            block = factor[0][:, None] * rows[0][0][:, cu[j]] * rows[0][1][:, cv[j]]
            for i in range(1, len(rows)):
                block += factor[i][:, None] * rows[i][0][:, cu[j]] * rows[i][1][:, cv[j]]
            yield np.arange(j.start, j.stop), None, block

    def _assemble(self, columns: Iterator[Columns], n_points: int, n: int,
                  order: torch.Tensor | None, cutoff: float, budget: int) -> Influence | None:
        """Dense and exact (``cutoff`` unused)."""
        if 4 * n_points * n > budget:
            return None
        dense = torch.zeros((n_points, n), dtype=self.dtype, device=self.device)
        for index, _, block in columns:
            dense[:, index[0]: index[-1] + 1] = block
        return Influence.from_dense(dense if order is None else dense[:, order])
