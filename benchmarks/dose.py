"""Dose benchmark: gamma speed, dose recompute speed, and engine agreement, in one run.

    .venv/bin/python benchmarks/dose.py [--device cpu|cuda] [--skip-pymedphys]
        [--skip-pyradplan] [--skip-gamma] [--skip-engines] [--pymedphys-default]
        [--anatomy brain|pelvis] [--size small|medium|realistic] [--perturbation mild|synthrad]
        [--dose-grids 4,3.5,3,2.5]

1. Gamma 2 %/2 mm (cutoff 10 %, interp fraction 10) on a 100^3 plan-like dose at 2 mm, ours
   (pass-rate search, torch) vs ``pymedphys.gamma`` on the same doses: with max_gamma=1.1
   (its fast setting, same pass rate) and, with --pymedphys-default, its default call (full
   gamma map); pass rates and the ratio of wall-clock times are printed.
2. Dose recompute time on a phantom case (the sCT dose with stored weights), per modality:
   our torch pencil beam vs the pyRadPlan reference (forward dose with stored weights).
3. Agreement on the phantom plans: pyRadPlan optimises the plan and computes the CT dose; our
   engine recomputes exactly pyRadPlan's beamlets and weights.  Prints the gamma pass rate of
   ours vs reference, and the dose metrics (MAE target, DVH, gamma) of a perturbed sCT from
   both engines with their relative differences; with --dose-grids, the DVH metric of both
   engines (same weights) at other dose grids, a numerics setting that moves the reference's
   own DVH metric too.  Then each engine with the plan it optimised itself (own steering).
Times are wall-clock on a shared machine; process CPU time is printed alongside.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np
from scipy import ndimage

from evaluator.dose.engines.torch_pb import SpotList, TorchPencilBeamEngine
from evaluator.dose.gamma import GammaSettings, gamma_pass_rate
from evaluator.dose.metrics import dose_metrics, dvh_metric, mae_target
from evaluator.dose.phantom_plans import make_phantom_plans, make_phantom_structures
from evaluator.phantoms import make_case


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - start[0], time.process_time() - start[1]


def plan_like_dose(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A plan-like dose (high-dose target, steep fall-off, low-dose bath) and an sCT-like
    evaluation dose: shifted by ~1.5 mm, scaled by 1 %, plus a smooth error field."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")
    r = np.sqrt(g[0] ** 2 + (g[1] / 0.8) ** 2 + (g[2] / 0.9) ** 2)
    ref = 2.0 / (1 + np.exp((r - 0.35) / 0.04)) + 0.9 * np.exp(-(r**2) / 0.6) * (1 + 0.3 * g[1])
    ev = ndimage.shift(ref, (0.75, -0.5, 0.4), order=1, mode="nearest") * 1.01
    err = ndimage.gaussian_filter(rng.normal(0, 1, ref.shape), 3.0)
    return ref, ev + err * (0.05 / float(err.std()))


def bench_gamma(device: str, skip_pymedphys: bool, pymedphys_default: bool) -> None:
    ref, ev = plan_like_dose()
    spacing = (2.0, 2.0, 2.0)
    s = GammaSettings(dose_pct=2, dta_mm=2, cutoff_pct=10, interp_fraction=10)
    gamma_pass_rate(ref[:20, :20, :20], ev[:20, :20, :20], spacing, s, device=device)  # warm-up
    t = clock()
    ours = gamma_pass_rate(ref, ev, spacing, s, device=device)
    wall, cpu = since(t)
    print(f"[gamma] 100^3 @ 2 mm, 2%/2mm, cutoff 10%, interp 10, device={device}")
    print(f"  ours                        pass rate {ours:.5f} {wall:8.2f} s wall "
          f"{cpu:8.2f} s cpu")
    if skip_pymedphys:
        return
    import pymedphys

    axes = tuple(np.arange(n) * 2.0 for n in ref.shape)
    runs: list[tuple[str, float | None]] = [("max_gamma=1.1 (fast setting)", 1.1)]
    if pymedphys_default:
        runs.append(("default call (max_gamma=None)", None))
    for label, max_gamma in runs:
        t = clock()
        g = pymedphys.gamma(axes, ref, axes, ev, 2, 2, lower_percent_dose_cutoff=10,
                            interp_fraction=10, max_gamma=max_gamma)
        pwall, pcpu = since(t)
        theirs = float((g[~np.isnan(g)] <= 1).mean())
        print(f"  pymedphys {label:29s} pass rate {theirs:.5f} {pwall:8.2f} s wall "
              f"{pcpu:8.2f} s cpu -> ours {pwall / wall:.1f}x faster (wall), "
              f"|diff| {abs(ours - theirs) * 100:.3f} pp")


# sCT perturbations: "mild" = +3 % HU in tissue, smooth +-40 HU error field, 10 HU noise;
# "synthrad" = errors like a typical SynthRAD submission's: bone HU 10 % low, soft tissue
# +2 %, smooth +-80 HU field, 25 HU noise
PERTURBATIONS = {"mild": (1.03, 1.03, 40.0, 10.0), "synthrad": (1.02, 0.90, 80.0, 25.0)}


def phantom(anatomy: str, size: str, perturbation: str = "mild") -> dict[str, Any]:
    case = make_case(anatomy, size, np.random.default_rng(0))
    structures, _ = make_phantom_structures(case["labels"], anatomy)
    ct = case["ct"].astype(np.float32)
    rng = np.random.default_rng(1)
    soft_scale, bone_scale, field_hu, noise_hu = PERTURBATIONS[perturbation]
    err = ndimage.gaussian_filter(rng.normal(0, 1, ct.shape), 4.0)
    err *= field_hu / max(float(err.std()), 1e-6)
    scaled = np.where(ct > 300, ct * bone_scale, ct * soft_scale)
    sct = np.where(ct > -500, scaled + err + rng.normal(0, noise_hu, ct.shape), ct)
    return {"ct": ct, "sct": sct.astype(np.float32), "structures": structures,
            "spacing": case["spacing"], "labels": case["labels"]}


def _metrics(plan: Any, d_ct: np.ndarray, d_sct: np.ndarray, case: dict[str, Any],
             device: str) -> dict[str, float]:
    st = case["structures"]
    oars = {o: st == plan.structures[o] for o in plan.oars}
    return dose_metrics(d_ct, d_sct, case["spacing"], plan.mask(st, plan.target), oars,
                        plan.prescription_gy, plan.modality, GammaSettings(), device)


def bench_engines(anatomy: str, size: str, device: str, skip_pyradplan: bool,
                  perturbation: str = "mild", grids: tuple[float, ...] = ()) -> None:
    case = phantom(anatomy, size, perturbation)
    ct, sct, st, sp = case["ct"], case["sct"], case["structures"], case["spacing"]
    plans = make_phantom_plans(case["labels"], sp, anatomy)
    ours = TorchPencilBeamEngine(device)
    mae = float(np.abs(sct - ct)[case["labels"] > 0].mean())
    print(f"[dose] {anatomy} phantom {ct.shape[::-1]} (x, y, z) @ "
          f"{tuple(round(s, 2) for s in sp)} mm, device={device}, sCT {perturbation} "
          f"(MAE {mae:.0f} HU in the body)")
    for modality, plan in plans.items():
        t = clock()
        plan.weights["torch_pb"] = ours.optimize(ct, sp, plan, st)
        owall, _ = since(t)
        ours.compute(sct, sp, plan, st, ct)  # warm-up
        t = clock()
        ours.compute(sct, sp, plan, st, ct)
        wall, cpu = since(t)
        print(f"  {modality:6s} ours       optimise {owall:7.2f} s | recompute sCT "
              f"{wall:7.2f} s wall {cpu:7.2f} s cpu")
        if skip_pyradplan:
            continue
        from evaluator.dose.engines.pyradplan import PyRadPlanEngine, available

        if not available():
            print("  (pyRadPlan not installed: pip install 'syntharena[dose]')")
            return
        ref = PyRadPlanEngine()
        t = clock()
        plan.weights["pyradplan"] = ref.optimize(ct, sp, plan, st)
        rwall_opt, _ = since(t)
        t = clock()
        d_ref_sct = ref.compute(sct, sp, plan, st, ct)
        rwall, rcpu = since(t)
        print(f"  {modality:6s} pyRadPlan  optimise {rwall_opt:7.2f} s | recompute sCT "
              f"{rwall:7.2f} s wall {rcpu:7.2f} s cpu   -> ours {rwall / wall:.0f}x faster")
        # agreement: our physics on exactly pyRadPlan's beamlets and weights
        d_ref_ct = ref.compute(ct, sp, plan, st, ct)
        spots = []
        weights = []
        offset = 0
        for beam in ref.spots(ct, sp, plan, st):
            n = len(beam["energy"])
            rng_mm = (ref.ranges_mm(beam["energy"]) if modality == "proton"
                      else np.full(n, np.nan))
            spots.append(SpotList(beam["pos_bev"][:, 0], beam["pos_bev"][:, 2], rng_mm))
            weights.append(plan.weights["pyradplan"][offset: offset + n])
            offset += n
        d_our_ct = ours.compute_spots(ct, sp, plan, st, spots, weights)
        d_our_sct = ours.compute_spots(sct, sp, plan, st, spots, weights)
        for label, s in (("2%/2mm default (cutoff 2%, voxels)", GammaSettings()),
                         ("2%/2mm cutoff 10%, interp 10", GammaSettings(2, 2, 10, 10)),
                         ("3%/3mm cutoff 10%, interp 10", GammaSettings(3, 3, 10, 10))):
            rate = gamma_pass_rate(d_ref_ct, d_our_ct, sp[::-1], s, device=device)
            print(f"  {modality:6s} agreement on CT, ours vs pyRadPlan, gamma {label}: "
                  f"{100 * rate:.2f} %")
        m_ref = _metrics(plan, d_ref_ct, d_ref_sct, case, device)
        m_our = _metrics(plan, d_our_ct, d_our_sct, case, device)
        print(f"  {modality:6s} metrics of the sCT, both engines on pyRadPlan's weights:")
        for key in m_ref:
            rel = abs(m_our[key] - m_ref[key]) / max(abs(m_ref[key]), 1e-12)
            print(f"  {modality:6s} {key:20s} pyRadPlan {m_ref[key]:9.4f}  ours "
                  f"{m_our[key]:9.4f}  rel. diff {100 * rel:6.1f} %")
        # the DVH metric's conditioning: both engines on the same weights at other dose grids
        # (a numerics setting): how much does the reference itself move?
        oars = {o: st == plan.structures[o] for o in plan.oars}
        target = plan.mask(st, plan.target)
        for g in grids:
            p_g = dataclasses.replace(plan, dose_grid_mm=g)
            r_ct, r_sct = ref.compute(ct, sp, p_g, st, ct), ref.compute(sct, sp, p_g, st, ct)
            o_ct = ours.compute_spots(ct, sp, p_g, st, spots, weights)
            o_sct = ours.compute_spots(sct, sp, p_g, st, spots, weights)
            a = dvh_metric(r_ct, r_sct, target, oars, plan.prescription_gy)
            b = dvh_metric(o_ct, o_sct, target, oars, plan.prescription_gy)
            print(f"  {modality:6s} dose grid {g:4.1f} mm, same weights: dvh pyRadPlan {a:.4f} "
                  f"ours {b:.4f} rel. diff {100 * abs(a - b) / a:5.1f} %; mae_target "
                  f"pyRadPlan {mae_target(r_ct, r_sct, plan.prescription_gy):.4f} ours "
                  f"{mae_target(o_ct, o_sct, plan.prescription_gy):.4f}")
        # the platform's pipeline: each engine scores with the plan it optimised on the CT
        m_own = _metrics(plan, ours.compute(ct, sp, plan, st, ct),
                         ours.compute(sct, sp, plan, st, ct), case, device)
        print(f"  {modality:6s} metrics of the sCT, each engine with its own optimised plan:")
        for key in m_ref:
            rel = abs(m_own[key] - m_ref[key]) / max(abs(m_ref[key]), 1e-12)
            print(f"  {modality:6s} {key:20s} pyRadPlan {m_ref[key]:9.4f}  ours "
                  f"{m_own[key]:9.4f}  rel. diff {100 * rel:6.1f} %")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-pymedphys", action="store_true")
    p.add_argument("--skip-pyradplan", action="store_true")
    p.add_argument("--skip-gamma", action="store_true")
    p.add_argument("--skip-engines", action="store_true")
    p.add_argument("--pymedphys-default", action="store_true",
                   help="also time pymedphys's default call (full gamma search; minutes)")
    p.add_argument("--anatomy", default="brain", choices=["brain", "pelvis"])
    p.add_argument("--size", default="small", choices=["small", "medium", "realistic"])
    p.add_argument("--perturbation", default="mild", choices=list(PERTURBATIONS))
    p.add_argument("--dose-grids", default="",
                   help="comma-separated dose grids (mm): DVH metric of both engines on the "
                        "same weights at each (the metric's sensitivity to numerics)")
    args = p.parse_args()
    if not args.skip_gamma:
        bench_gamma(args.device, args.skip_pymedphys, args.pymedphys_default)
    if not args.skip_engines:
        grids = tuple(float(g) for g in args.dose_grids.split(",") if g.strip())
        bench_engines(args.anatomy, args.size, args.device, args.skip_pyradplan,
                      args.perturbation, grids)


if __name__ == "__main__":
    main()
