"""Fluence (beamlet weight) optimisation, done once per plan on the real CT.

Objective (same for every engine): squared deviation from the prescription in the target
(penalty 1000), squared overdose above 50 % of the prescription in each organ at risk
(penalty 100), both averaged over the structure's voxels.  Weights stay non-negative:
L-BFGS-B (scipy) with bounds from zero fluence, as pyRadPlan does.  The dose is linear in
the weights: with an :class:`Influence` matrix (the engine builds it once, like pyRadPlan's
dose influence matrix) an iteration is two matrix-vector products; without one (too large)
torch autograd differentiates through the engine (one forward and one backward pass).  The
engine then scales the result so that the mean target dose it reports equals the
prescription.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from evaluator.dose.plan import Plan

TARGET_PENALTY = 1000.0
OAR_PENALTY = 100.0
OAR_MAX_FRACTION = 0.5
# pyRadPlan's scipy defaults: L-BFGS-B, up to 500 iterations, objective/gradient tolerance 1e-5
MAX_ITERATIONS = 500
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Influence:
    """A dose influence matrix: the dose at the optimisation points per unit weight of each
    beamlet, ``matrix`` (points x weights) and its ``transposed``: dense, or both sparse CSR
    (torch multiplies fast with CSR only, so the gradient needs the transpose as a matrix of
    its own)."""

    matrix: torch.Tensor
    transposed: torch.Tensor

    @classmethod
    def from_dense(cls, matrix: torch.Tensor) -> Influence:
        return cls(matrix, matrix.T)

    @classmethod
    def from_entries(
        cls, points: torch.Tensor, weights: torch.Tensor, values: torch.Tensor,
        shape: tuple[int, int],
    ) -> Influence:
        """From its non-zero entries (each (point, weight) at most once, any order)."""
        n_points, n_weights = shape

        def csr(row: torch.Tensor, col: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
            by_row = torch.argsort(row * n_cols + col)  # unique keys: rows, then columns
            crow = torch.zeros(n_rows + 1, dtype=torch.long, device=row.device)
            crow[1:] = torch.cumsum(torch.bincount(row, minlength=n_rows), 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "sparse CSR is in beta"
                return torch.sparse_csr_tensor(crow, col[by_row], values[by_row],
                                               (n_rows, n_cols))

        return cls(csr(points, weights, n_points, n_weights),
                   csr(weights, points, n_weights, n_points))


def objective(
    dose: torch.Tensor, plan: Plan, target: torch.Tensor, oars: list[torch.Tensor]
) -> torch.Tensor:
    """The plan objective for ``dose``; ``target`` and ``oars`` index its flattened voxels."""
    rx = plan.prescription_gy
    flat = dose.reshape(-1)
    loss = TARGET_PENALTY * ((flat[target] - rx) ** 2).mean()
    for index in oars:
        over = torch.relu(flat[index] - OAR_MAX_FRACTION * rx)
        loss = loss + OAR_PENALTY * (over**2).mean()
    return loss


def optimize_weights(
    dose_fn: Callable[[torch.Tensor], torch.Tensor],
    n_weights: int,
    plan: Plan,
    labels: np.ndarray,
    device: torch.device,
    iterations: int | None = None,
    dtype: torch.dtype = torch.float32,
    influence: Influence | None = None,
) -> list[float]:
    """Non-negative weights minimising :func:`objective` for a dose linear in the weights
    (unscaled: the engine scales them so the reported mean target dose is the prescription).
    With ``influence`` (``dose_fn(w) == influence.matrix @ w``) each iteration uses it
    instead of ``dose_fn``."""
    if n_weights == 0:
        raise ValueError("the plan has no beamlets (does the target lie inside the CT?)")
    # voxel indices rather than boolean masks: indexing with them costs no search per call
    target = torch.as_tensor(np.flatnonzero(plan.mask(labels, plan.target)), device=device)
    oars = [torch.as_tensor(np.flatnonzero(plan.mask(labels, o)), device=device)
            for o in plan.oars]

    def matrix_free(x: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.as_tensor(x, dtype=dtype, device=device).requires_grad_(True)
        loss = objective(dose_fn(xt), plan, target, oars)
        (grad,) = torch.autograd.grad(loss, xt)
        return float(loss.detach()), grad.detach().cpu().numpy().astype(np.float64)

    loss_and_grad = matrix_free
    if influence is not None:
        matrix, transposed = influence.matrix, influence.transposed

        def with_matrix(x: np.ndarray) -> tuple[float, np.ndarray]:
            # the dose is matrix @ w, so the gradient is matrix^T @ d(objective)/d(dose)
            xt = torch.as_tensor(x, dtype=dtype, device=device)
            dose = (matrix @ xt).requires_grad_(True)
            loss = objective(dose, plan, target, oars)
            (grad_dose,) = torch.autograd.grad(loss, dose)
            grad = transposed @ grad_dose
            return float(loss.detach()), grad.cpu().numpy().astype(np.float64)

        loss_and_grad = with_matrix

    from scipy.optimize import minimize

    # pyRadPlan's (matRad's) set-up: start from zero fluence, L-BFGS-B on the raw weights,
    # objective and gradient tolerance 1e-5.  The start matters: proton plans are highly
    # degenerate and the path from zero ends in smoother, more robust spot weights (an sCT's
    # dose errors then match those of the reference planner's plans; from uniform weights
    # they were 2-3x larger).
    # L-BFGS-B's BLAS runs single-threaded: its OpenBLAS threads otherwise keep spinning and
    # take the cores from torch's threads between iterations (pelvis plans ran 1.8x slower)
    with threadpool_limits(1, user_api="blas"):
        result = minimize(loss_and_grad, np.zeros(n_weights), jac=True, method="L-BFGS-B",
                          bounds=[(0.0, None)] * n_weights,
                          options={"maxiter": iterations or MAX_ITERATIONS, "ftol": TOLERANCE,
                                   "gtol": TOLERANCE})
    return [float(x) for x in np.clip(result.x, 0.0, None)]
