"""Fluence (beamlet weight) optimisation, done once per plan on the real CT.

Objective (same for every engine): squared deviation from the prescription in the target
(penalty 1000), squared overdose above 50 % of the prescription in each organ at risk
(penalty 100), both averaged over the structure's voxels.  Weights stay non-negative
(projected Adam); the result is scaled so that the mean target dose equals the prescription.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from evaluator.dose.plan import Plan

TARGET_PENALTY = 1000.0
OAR_PENALTY = 100.0
OAR_MAX_FRACTION = 0.5


def objective(
    dose: torch.Tensor, plan: Plan, target: torch.Tensor, oars: list[torch.Tensor]
) -> torch.Tensor:
    rx = plan.prescription_gy
    loss = TARGET_PENALTY * ((dose[target] - rx) ** 2).mean()
    for mask in oars:
        over = torch.relu(dose[mask] - OAR_MAX_FRACTION * rx)
        loss = loss + OAR_PENALTY * (over**2).mean()
    return loss


def optimize_weights(
    dose_fn: Callable[[torch.Tensor], torch.Tensor],
    n_weights: int,
    plan: Plan,
    labels: np.ndarray,
    device: torch.device,
    iterations: int = 150,
) -> list[float]:
    """Non-negative weights minimising :func:`objective` for a dose linear in the weights."""
    if n_weights == 0:
        raise ValueError("the plan has no beamlets (does the target lie inside the CT?)")
    target = torch.as_tensor(plan.mask(labels, plan.target), device=device)
    oars = [torch.as_tensor(plan.mask(labels, o), device=device) for o in plan.oars]
    w = torch.ones(n_weights, dtype=torch.float32, device=device)
    with torch.no_grad():
        scale = plan.prescription_gy / float(dose_fn(w)[target].mean().clamp(min=1e-12))
    w = (w * scale).requires_grad_(True)
    # projected Adam written out (torch.optim pulls in torch._dynamo: seconds of import)
    lr, b1, b2, eps = 0.05 * scale, 0.9, 0.999, 1e-12
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for it in range(1, iterations + 1):
        loss = objective(dose_fn(w), plan, target, oars)
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            step = lr * (m / (1 - b1**it)) / ((v / (1 - b2**it)).sqrt() + eps)
            w.sub_(step).clamp_(min=0.0)
    with torch.no_grad():
        final = dose_fn(w)
        w *= plan.prescription_gy / float(final[target].mean().clamp(min=1e-12))
    return [float(x) for x in w.detach().cpu().numpy()]
