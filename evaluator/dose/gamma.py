"""Gamma index in torch (CPU and CUDA) with the semantics of ``pymedphys.gamma``.

For ``interp_fraction >= 1`` the search replicates pymedphys exactly: reference points with
dose >= ``cutoff_pct`` % of the global normalisation (max reference dose) are searched on
spherical shells of growing radius (step ``dta / interp_fraction``, the DTA itself always
visited), the evaluation dose is linearly interpolated at the shell points (points outside
the grid never match), and the search of a point stops once its gamma is below the current
radius / DTA.  ``interp_fraction = 0`` means no sub-voxel refinement: only evaluation voxels
within the search radius are tested (matRad's default), which is the platform default.

Both doses must be on the same grid.  Speed comes from the shared grid: each shell offset
has one set of trilinear weights for every reference point, so each point's box of
neighbouring evaluation voxels is gathered once and all shell points are interpolated by a
sparse (shell points x box) matrix product.  Only undecided points are followed; for pass
rates the search stops at gamma 1, a point is dropped as soon as one shell point passes it,
and points whose neighbourhood dose range cannot come within the remaining dose tolerance
are skipped (an exact bound, so pass rates equal pymedphys's).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

# Points x shell-offsets per gather chunk; bounds memory to a few hundred MB.
_CHUNK = 1 << 22


@dataclass(frozen=True)
class GammaSettings:
    """Gamma criteria; the defaults are the platform's (matRad-compatible) ones."""

    dose_pct: float = 2.0
    dta_mm: float = 2.0
    cutoff_pct: float = 2.0
    interp_fraction: int = 0
    local: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shell_offsets(distance: float, ndim: int, step: float) -> np.ndarray:
    """Offsets (mm, one row per point) on a shell at ``distance``, as pymedphys builds them."""
    if distance == 0:
        return np.zeros((1, ndim))
    if ndim == 1:
        return np.array([[distance], [-distance]])
    if ndim == 2:
        count = int(np.ceil(2 * np.pi * distance / step)) + 1
        theta = np.linspace(0, 2 * np.pi, count + 1)[:-1]
        return np.stack([distance * np.cos(theta), distance * np.sin(theta)], axis=1)
    rows = int(np.ceil(np.pi * distance / step)) + 1
    elevation = np.linspace(0, np.pi, rows)
    per_row = np.ceil(2 * np.pi * distance * np.sin(elevation) / step).astype(int) + 1
    parts = []
    for phi, count in zip(elevation, per_row, strict=True):
        azimuth = np.linspace(0, 2 * np.pi, count + 1)[:-1]
        parts.append(
            np.stack(
                [
                    distance * np.sin(phi) * np.cos(azimuth),
                    distance * np.sin(phi) * np.sin(azimuth),
                    distance * np.cos(phi) * np.ones_like(azimuth),
                ],
                axis=1,
            )
        )
    return np.concatenate(parts)


def _search_distances(
    dta: float, interp_fraction: int, max_gamma: float
) -> Iterator[tuple[float, float]]:
    """(distance, step) pairs in pymedphys's order (float accumulation included)."""
    step = dta / interp_fraction
    forced = [dta]
    distance = 0.0
    while distance <= dta * max_gamma:
        yield distance, step
        step = max(distance / interp_fraction / max_gamma, step)
        distance += step
        if forced and distance >= forced[0]:
            distance = forced.pop(0)


def _grid_offsets(spacing: Sequence[float], radius: float) -> np.ndarray:
    """Integer voxel offsets within ``radius`` mm, sorted by distance."""
    reach = [math.floor(radius / s + 1e-9) for s in spacing]
    axes = [np.arange(-r, r + 1) for r in reach]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(spacing))
    dist = np.sqrt(((grid * np.asarray(spacing)) ** 2).sum(axis=1))
    keep = dist <= radius + 1e-9
    order = np.argsort(dist[keep], kind="stable")
    return np.asarray(grid[keep][order])


_FAR = 1e30  # evaluation dose outside the grid: never within any dose criterion


class _Evaluator:
    """Interpolated evaluation-dose lookups at (reference voxel + offset) for many points.

    The evaluation dose is padded with a huge value, so a shell point whose interpolation
    touches a voxel outside the grid with a non-zero weight can never match (pymedphys treats
    points outside the grid as infinitely far in dose); no bounds checks are needed.
    """

    def __init__(self, dose_eval: torch.Tensor) -> None:
        self.dose = dose_eval
        self.device = dose_eval.device
        self.pad = -1
        self.flat = dose_eval.reshape(-1)
        self.strides: list[int] = []
        self._ensure_pad(2)

    def _ensure_pad(self, pad: int) -> None:
        if pad <= self.pad:
            return
        self.pad = max(pad, 2 * self.pad)
        padded = F.pad(self.dose, [self.pad] * (2 * self.dose.ndim), value=_FAR)
        self.flat = padded.reshape(-1)
        shape = padded.shape
        strides = [1] * len(shape)
        for k in range(len(shape) - 2, -1, -1):
            strides[k] = strides[k + 1] * shape[k + 1]
        self.strides = strides

    def min_abs_diff(
        self, idx: torch.Tensor, ref: torch.Tensor, offsets_vox: np.ndarray,
        norm: torch.Tensor | float, good_enough: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """min over offsets of |E(idx + offset) - ref| / norm (huge where off the grid).

        With ``good_enough`` (absolute differences per point) a point is no longer followed
        once its minimum is at or below it: the result is then only known to be <= it.
        """
        ndim = idx.shape[1]
        self._ensure_pad(math.ceil(float(np.abs(offsets_vox).max(initial=0.0))) + 2)
        base = np.floor(offsets_vox + 1e-9)
        frac = offsets_vox - base
        frac[frac < 1e-9] = 0.0
        flat_idx = sum((idx[:, k] + self.pad) * self.strides[k] for k in range(ndim))
        assert isinstance(flat_idx, torch.Tensor)
        # Gather each point's box of neighbours once (A x K), then interpolate all shell
        # points as one sparse (P x K) @ (K x A) product: contiguous, multithreaded.
        reach = [math.ceil(float(np.abs(offsets_vox[:, k]).max(initial=0.0)) - 1e-9)
                 for k in range(ndim)]
        span = [2 * r + 2 for r in reach]
        box = np.stack(np.meshgrid(*[np.arange(-r, r + 2) for r in reach], indexing="ij"),
                       axis=-1).reshape(-1, ndim)
        box_shift = torch.as_tensor(
            sum(box[:, k].astype(np.int64) * self.strides[k] for k in range(ndim)),
            device=self.device)
        kstride = [int(np.prod(span[k + 1:])) for k in range(ndim)]
        rows, cols, vals = [], [], []
        for c in range(1 << ndim):
            bits = [(c >> (ndim - 1 - k)) & 1 for k in range(ndim)]
            wn = np.ones(len(offsets_vox))
            col = np.zeros(len(offsets_vox), dtype=np.int64)
            for k, bit in enumerate(bits):
                wn = wn * (frac[:, k] if bit else 1.0 - frac[:, k])
                col = col + (base[:, k].astype(np.int64) + bit + reach[k]) * kstride[k]
            keep = wn > 0
            rows.append(np.flatnonzero(keep))
            cols.append(col[keep])
            vals.append(wn[keep])
        row_a, col_a, val_a = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        order = np.argsort(row_a, kind="stable")
        row_a, col_a, val_a = row_a[order], col_a[order], val_a[order]
        neighbours = self.flat[flat_idx[:, None] + box_shift[None, :]].T.contiguous()  # K x A
        best = torch.full((idx.shape[0],), math.inf, dtype=self.flat.dtype, device=self.device)
        live = torch.arange(idx.shape[0], device=self.device)
        per = max(16, _CHUNK // max(1, idx.shape[0]))
        n_k = int(np.prod(span))
        bounds = np.searchsorted(row_a, np.arange(0, len(offsets_vox) + per, per))
        for i, start in enumerate(range(0, len(offsets_vox), per)):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            count = min(per, len(offsets_vox) - start)
            weights = torch.sparse_coo_tensor(
                torch.as_tensor(np.stack([row_a[lo:hi] - start, col_a[lo:hi]]),
                                device=self.device),
                torch.as_tensor(val_a[lo:hi], dtype=self.flat.dtype, device=self.device),
                (count, n_k), check_invariants=False,
            ).coalesce()
            values = torch.sparse.mm(weights, neighbours)  # count x A_live
            best[live] = torch.minimum(best[live], (values - ref[live][None, :]).abs_().amin(0))
            if good_enough is not None:
                keep_live = best[live] > good_enough[live]
                live = live[keep_live]
                neighbours = neighbours[:, keep_live]
                if live.numel() == 0:
                    break
        return best / norm


def _reach(spacing: np.ndarray, radius_mm: float) -> tuple[int, ...]:
    """Voxels per axis that any interpolation within ``radius_mm`` can touch."""
    return tuple(max(0, math.ceil(radius_mm / sp - 1e-9)) for sp in spacing)


def _neighbourhood_range(
    dose: torch.Tensor, reach: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of ``dose`` over the box of +-``reach`` voxels around every voxel."""
    kernel = [2 * r + 1 for r in reach]
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dose.ndim]
    x = dose[None, None]
    hi = pool(x, kernel, stride=1, padding=list(reach))[0, 0]
    lo = -pool(-x, kernel, stride=1, padding=list(reach))[0, 0]
    return lo, hi


def gamma_index(
    dose_ref: np.ndarray | torch.Tensor,
    dose_eval: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    settings: GammaSettings | None = None,
    *,
    max_gamma: float = math.inf,
    skip_once_passed: bool = False,
    global_normalisation: float | None = None,
    device: str = "cpu",
    clamp: bool = True,
) -> np.ndarray:
    """Gamma values on the reference grid (NaN below the cutoff), like ``pymedphys.gamma``.

    ``spacing`` is in mm along the array axes.  ``max_gamma`` caps the search (values above
    are reported as ``max_gamma`` unless ``clamp`` is False); ``skip_once_passed`` stops
    following a point once its gamma is below 1.
    """
    s = settings or GammaSettings()
    ref = torch.as_tensor(np.asarray(dose_ref), dtype=torch.float64, device=device)
    ev = torch.as_tensor(np.asarray(dose_eval), dtype=torch.float64, device=device)
    if ref.shape != ev.shape:
        raise ValueError(f"dose grids differ: {tuple(ref.shape)} vs {tuple(ev.shape)}")
    if len(spacing) != ref.ndim or ref.ndim not in (1, 2, 3):
        raise ValueError("spacing must give one value per axis of a 1-3 D dose")
    if s.dta_mm <= 0 or s.dose_pct <= 0 or s.interp_fraction < 0:
        raise ValueError("dose_pct and dta_mm must be > 0 and interp_fraction >= 0")
    norm_global = float(ref.max()) if global_normalisation is None else global_normalisation
    cutoff = s.cutoff_pct / 100.0 * norm_global
    flat_ref = ref.reshape(-1)
    to_calc = torch.nonzero(flat_ref >= cutoff).squeeze(1)
    gamma = torch.full_like(flat_ref, math.nan)
    current = torch.full((to_calc.numel(),), math.inf, dtype=torch.float64, device=device)
    if to_calc.numel() == 0:
        return gamma.reshape(ref.shape).cpu().numpy()
    all_idx = torch.stack(torch.unravel_index(to_calc, ref.shape), dim=1)
    evaluator = _Evaluator(ev)
    delta = s.dose_pct / 100.0
    active = torch.arange(to_calc.numel(), device=device)
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    pass_mode = skip_once_passed and max_gamma <= 1.0
    ranges: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = {}  # per box size

    def could_pass(
        candidates: torch.Tensor, distance: float, slack: float | None = None
    ) -> torch.Tensor:
        """Points that could reach gamma <= 1 at ``distance``: some evaluation value the
        shell's interpolation uses lies within the remaining dose tolerance (exact bound)."""
        key = _reach(spacing_arr, distance)
        if key not in ranges:
            lo_, hi_ = _neighbourhood_range(ev, key)
            ranges[key] = (lo_.reshape(-1), hi_.reshape(-1))
        lo, hi = ranges[key]
        flat = to_calc[candidates]
        r = flat_ref[flat]
        if slack is None:
            slack = max(0.0, 1.0 - (distance / s.dta_mm) ** 2) ** 0.5
        tol = delta * slack * (r if s.local else norm_global)
        ok: torch.Tensor = (r >= lo[flat] - tol) & (r <= hi[flat] + tol)
        return ok

    if pass_mode:
        # points that cannot pass even at the DTA fail at once (gamma > max_gamma)
        hopeful = could_pass(active, s.dta_mm * max_gamma, slack=1.0)
        current[~hopeful] = math.nextafter(max_gamma, math.inf)
        active = active[hopeful]

    def update(offsets_mm: np.ndarray, distance: float) -> None:
        points = active
        if pass_mode and distance > 0:
            points = active[could_pass(active, distance)]
            if points.numel() == 0:
                return
        r = flat_ref[to_calc[points]]
        norm: torch.Tensor | float = r if s.local else norm_global
        good_enough = None
        if pass_mode:  # below this a point passes at this distance: stop following it
            slack = max(0.0, 1.0 - (distance / s.dta_mm) ** 2) ** 0.5
            good_enough = delta * slack * (r if s.local else torch.full_like(r, norm_global))
        diff = evaluator.min_abs_diff(all_idx[points], r, offsets_mm / spacing_arr, norm,
                                      good_enough)
        g = torch.sqrt((diff / delta) ** 2 + (distance / s.dta_mm) ** 2)
        current[points] = torch.minimum(current[points], g)

    if s.interp_fraction == 0:
        radius = s.dta_mm * (max_gamma if math.isfinite(max_gamma) else 2.0)
        offsets = _grid_offsets(spacing, radius) if math.isfinite(radius) else None
        assert offsets is not None
        dists = np.sqrt(((offsets * spacing_arr) ** 2).sum(axis=1))
        for d in np.unique(dists):
            group = offsets[dists == d]
            update(group * spacing_arr, float(d))
            keep = current[active] > d / s.dta_mm
            if skip_once_passed:
                keep &= current[active] >= 1
            active = active[keep]
            if active.numel() == 0:
                break
    else:
        for distance, step in _search_distances(s.dta_mm, s.interp_fraction, max_gamma):
            update(_shell_offsets(distance, ref.ndim, step), distance)
            keep = current[active] > distance / s.dta_mm
            if skip_once_passed:
                keep &= current[active] >= 1
            active = active[keep]
            if active.numel() == 0:
                break
    current = torch.where(torch.isinf(current), torch.full_like(current, math.nan), current)
    if clamp and math.isfinite(max_gamma):
        current = torch.clamp(current, max=max_gamma)
    gamma[to_calc] = current
    return gamma.reshape(ref.shape).cpu().numpy()


def gamma_pass_rate(
    dose_ref: np.ndarray | torch.Tensor,
    dose_eval: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    settings: GammaSettings | None = None,
    *,
    device: str = "cpu",
) -> float:
    """Fraction of reference points above the cutoff with gamma <= 1 (NaN if none)."""
    gamma = gamma_index(
        dose_ref, dose_eval, spacing, settings, max_gamma=1.0, skip_once_passed=True,
        device=device, clamp=False,
    )
    valid = ~np.isnan(gamma)
    if not valid.any():
        return math.nan
    return float((gamma[valid] <= 1.0).sum() / valid.sum())
