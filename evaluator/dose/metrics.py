"""SynthRAD2023 dose metrics between the dose on the CT and the dose on the sCT.

* MAE target dose: mean |D_ct - D_sct| / Rx over voxels with D_ct >= 0.9 Rx.
* DVH metric: |dD98|/D98 + |dCI|/CI for the target, CI = V_T,95^2 / (V_T * V_95) with 95 %
  of Rx, plus the mean over up to three organs at risk (those with the highest
  (D5 + Dmean)/2 on the CT dose) of |dD2|/D2 + |dDmean|/Dmean.  Differences are CT - sCT,
  denominators come from the CT dose; Dx is the dose received by at least x % of the volume.
* Gamma pass rate (percent) with the CT dose as reference, settings recorded by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from evaluator.dose.gamma import GammaSettings, gamma_index, gamma_pass_rate

MAX_OARS = 3


def d_at(dose: np.ndarray, percent_volume: float) -> float:
    """Dx: the minimum dose received by the hottest ``percent_volume`` % of the voxels."""
    return float(np.percentile(dose, 100.0 - percent_volume))


def _rel(a: float, b: float) -> float:
    return abs(a - b) / a if a > 0 else (0.0 if a == b else float("inf"))


def mae_target(d_ct: np.ndarray, d_sct: np.ndarray, rx: float) -> float:
    high = d_ct >= 0.9 * rx
    if not high.any():
        return float("nan")
    return float(np.mean(np.abs(d_ct[high] - d_sct[high])) / rx)


def conformity_index(dose: np.ndarray, target: np.ndarray, rx: float) -> float:
    covered = dose >= 0.95 * rx
    v_t95 = float(np.count_nonzero(covered & target))
    v_t, v_95 = float(np.count_nonzero(target)), float(np.count_nonzero(covered))
    return v_t95**2 / (v_t * v_95) if v_t > 0 and v_95 > 0 else 0.0


def select_oars(d_ct: np.ndarray, oars: Mapping[str, np.ndarray]) -> list[str]:
    """Up to three OARs with the highest (D5 + Dmean)/2 on the CT dose."""
    score = {
        name: (d_at(d_ct[m], 5.0) + float(d_ct[m].mean())) / 2.0
        for name, m in oars.items() if m.any()
    }
    return sorted(score, key=lambda n: -score[n])[:MAX_OARS]


def dvh_metric(
    d_ct: np.ndarray, d_sct: np.ndarray, target: np.ndarray, oars: Mapping[str, np.ndarray],
    rx: float,
) -> float:
    t_ct, t_sct = d_ct[target], d_sct[target]
    value = _rel(d_at(t_ct, 98.0), d_at(t_sct, 98.0))
    value += _rel(conformity_index(d_ct, target, rx), conformity_index(d_sct, target, rx))
    chosen = select_oars(d_ct, oars)
    if chosen:
        terms = []
        for name in chosen:
            a, b = d_ct[oars[name]], d_sct[oars[name]]
            terms.append(_rel(d_at(a, 2.0), d_at(b, 2.0)) + _rel(float(a.mean()), float(b.mean())))
        value += float(np.mean(terms))
    return value


def gamma_map(
    d_ct: np.ndarray, d_sct: np.ndarray, spacing: Sequence[float],
    gamma: GammaSettings | None = None, device: str = "cpu",
) -> np.ndarray:
    """Gamma values exactly as the pass rate computes them (NaN below the cutoff; above 1
    only "fails", not the true gamma); ``spacing`` is (x, y, z) mm."""
    return gamma_index(d_ct, d_sct, tuple(spacing)[::-1], gamma, max_gamma=1.0,
                       skip_once_passed=True, device=device, clamp=False)


def dose_metrics(
    d_ct: np.ndarray,
    d_sct: np.ndarray,
    spacing: Sequence[float],
    target: np.ndarray,
    oars: Mapping[str, np.ndarray],
    rx: float,
    modality: str,
    gamma: GammaSettings | None = None,
    device: str = "cpu",
    gamma_values: np.ndarray | None = None,
) -> dict[str, float]:
    """The three metrics for one modality; ``spacing`` is (x, y, z) mm. ``gamma_values``:
    the :func:`gamma_map` when the caller has it already (the viewer's products)."""
    if gamma_values is None:
        rate = gamma_pass_rate(d_ct, d_sct, tuple(spacing)[::-1], gamma, device=device)
    else:
        valid = ~np.isnan(gamma_values)
        rate = float((gamma_values[valid] <= 1.0).sum() / valid.sum()) if valid.any() \
            else float("nan")
    return {
        f"mae_target_{modality}": mae_target(d_ct, d_sct, rx),
        f"dvh_{modality}": dvh_metric(d_ct, d_sct, target, oars, rx),
        f"gamma_{modality}": 100.0 * rate,
    }
