"""Dose benchmark: gamma speed, dose recompute speed, and engine agreement, in one run.

    .venv/bin/python benchmarks/dose.py [--device cpu|cuda] [--skip-pymedphys]
        [--skip-pyradplan] [--skip-gamma] [--skip-engines] [--pymedphys-default]
        [--anatomy brain|pelvis] [--size small|medium|realistic] [--seed N] [--vary-layout]
        [--cases DIR] [--perturbation mild|synthrad] [--dose-grids 4,3.5,3,2.5]
        [--threads N] [--recompute-only] [--sweep]

The engines run on a phantom made with --anatomy/--size/--seed (--vary-layout: the target
and organs move per seed), or on every case folder under --cases DIR (``ct.mha``,
``structures.mha``, ``plan_{photon,proton}.json``, ``region.json``: e.g. written by
``python -m evaluator phantom --plans``).  --threads caps torch and BLAS threads as an eval
worker does (``SYNTHARENA_EVAL_THREADS``); --recompute-only times the recompute alone (run
several at once to measure a busy machine); --sweep prints, per case and modality, the
metrics of each HU perturbation of ``benchmarks/hu_sweep.py`` (soft-tissue bias, bone scale,
noise, local air/bone error) from both engines recomputing pyRadPlan's plan, with both
engines' recompute times, instead of the single-perturbation report.

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
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from evaluator.dose.engines.torch_pb import SpotList, TorchPencilBeamEngine
from evaluator.dose.gamma import GammaSettings, gamma_pass_rate
from evaluator.dose.metrics import dose_metrics, dvh_metric, mae_target
from evaluator.dose.phantom_plans import make_phantom_plans, make_phantom_structures
from evaluator.dose.plan import PLAN_FILE, Plan, load_plan
from evaluator.io import read_volume
from evaluator.phantoms import REGIONS, make_case


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


def perturb(ct: np.ndarray, perturbation: str, seed: int = 1) -> np.ndarray:
    """An sCT: the CT with one of the :data:`PERTURBATIONS` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    soft_scale, bone_scale, field_hu, noise_hu = PERTURBATIONS[perturbation]
    err = ndimage.gaussian_filter(rng.normal(0, 1, ct.shape), 4.0)
    err *= field_hu / max(float(err.std()), 1e-6)
    scaled = np.where(ct > 300, ct * bone_scale, ct * soft_scale)
    sct = np.where(ct > -500, scaled + err + rng.normal(0, noise_hu, ct.shape), ct)
    return sct.astype(np.float32)


def phantom(anatomy: str, size: str, perturbation: str = "mild", seed: int = 0,
            vary_layout: bool = False) -> dict[str, Any]:
    """A phantom case made here, with its plans (no weights yet)."""
    case = make_case(anatomy, size, np.random.default_rng(seed), vary_layout=vary_layout)
    structures, _ = make_phantom_structures(case["labels"], anatomy, case["layout"])
    ct = case["ct"].astype(np.float32)
    return {"name": f"{anatomy} {size} seed {seed}", "ct": ct, "anatomy": anatomy,
            "sct": perturb(ct, perturbation), "structures": structures,
            "spacing": case["spacing"], "body": case["labels"] > 0,
            "plans": make_phantom_plans(case["labels"], case["spacing"], anatomy,
                                        case["layout"])}


def case_dirs(root: str | Path) -> list[Path]:
    """The case folders under ``root`` that hold a CT, structures and at least one plan."""
    found = sorted(d for d in Path(root).iterdir() if d.is_dir() and (d / "ct.mha").is_file()
                   and (d / "structures.mha").is_file()
                   and any((d / f).is_file() for f in PLAN_FILE.values()))
    if not found:
        raise SystemExit(f"no case folders under {root} (each needs ct.mha, structures.mha "
                         "and plan_photon.json or plan_proton.json; write some with "
                         "`python -m evaluator phantom --plans --out DIR`)")
    return found


def load_case(case_dir: Path, perturbation: str = "mild") -> dict[str, Any]:
    """A case folder's CT, structures and plans (the weights it holds are not used)."""
    ct = read_volume(case_dir / "ct.mha")
    structures = read_volume(case_dir / "structures.mha").array
    plans: dict[str, Plan] = {m: load_plan(case_dir / f) for m, f in PLAN_FILE.items()
                              if (case_dir / f).is_file()}
    for plan in plans.values():
        plan.weights.clear()
    region = case_dir / "region.json"
    names = {v: k for k, v in REGIONS.items()}
    anatomy = names.get(json.loads(region.read_text()), "?") if region.is_file() else "?"
    hu = ct.array.astype(np.float32)
    return {"name": case_dir.name, "ct": hu, "sct": perturb(hu, perturbation),
            "anatomy": anatomy, "structures": structures, "spacing": ct.spacing,
            "body": structures > 0, "plans": plans}


def _metrics(plan: Any, d_ct: np.ndarray, d_sct: np.ndarray, case: dict[str, Any],
             device: str) -> dict[str, float]:
    st = case["structures"]
    oars = {o: st == plan.structures[o] for o in plan.oars}
    return dose_metrics(d_ct, d_sct, case["spacing"], plan.mask(st, plan.target), oars,
                        plan.prescription_gy, plan.modality, GammaSettings(), device)


def bench_engines(case: dict[str, Any], device: str, skip_pyradplan: bool,
                  perturbation: str = "mild", grids: tuple[float, ...] = (),
                  recompute_only: bool = False) -> None:
    ct, sct, st, sp = case["ct"], case["sct"], case["structures"], case["spacing"]
    ours = TorchPencilBeamEngine(device)
    mae = float(np.abs(sct - ct)[case["body"]].mean())
    print(f"[dose] {case['name']} ({case['anatomy']}) {ct.shape[::-1]} (x, y, z) @ "
          f"{tuple(round(s, 2) for s in sp)} mm, device={device}, sCT {perturbation} "
          f"(MAE {mae:.0f} HU in the body), torch threads {torch.get_num_threads()}")
    for modality, plan in case["plans"].items():
        t = clock()
        plan.weights["torch_pb"] = ours.optimize(ct, sp, plan, st)
        owall, _ = since(t)
        ours.compute(sct, sp, plan, st, ct)  # warm-up
        t = clock()
        ours.compute(sct, sp, plan, st, ct)
        wall, cpu = since(t)
        print(f"  {modality:6s} ours       optimise {owall:7.2f} s | recompute sCT "
              f"{wall:7.2f} s wall {cpu:7.2f} s cpu")
        if skip_pyradplan or recompute_only:
            continue
        from evaluator.dose.engines.pyradplan import PyRadPlanEngine, available

        if not available():
            from evaluator.dose.engines.pyradplan_remote import INSTALL_HINT

            print(f"  (pyRadPlan not installed: {INSTALL_HINT})")
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
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.add_argument("--vary-layout", action="store_true",
                   help="the phantom's target and organs move and resize per seed")
    p.add_argument("--cases", default="",
                   help="folder of case folders to run the engines on (instead of a phantom)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch/BLAS threads (default: torch's own, one per core)")
    p.add_argument("--recompute-only", action="store_true",
                   help="only optimise and time the recompute with our engine")
    p.add_argument("--perturbation", default="mild", choices=list(PERTURBATIONS))
    p.add_argument("--sweep", action="store_true",
                   help="ours vs pyRadPlan per HU perturbation (benchmarks/hu_sweep.py)")
    p.add_argument("--dose-grids", default="",
                   help="comma-separated dose grids (mm): DVH metric of both engines on the "
                        "same weights at each (the metric's sensitivity to numerics)")
    args = p.parse_args()
    if args.threads > 0:  # as an eval worker child does (worker/threads.py)
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    if not args.skip_gamma and not args.recompute_only:
        bench_gamma(args.device, args.skip_pymedphys, args.pymedphys_default)
    if args.skip_engines:
        return
    grids = tuple(float(g) for g in args.dose_grids.split(",") if g.strip())
    cases = ([load_case(d, args.perturbation) for d in case_dirs(args.cases)] if args.cases
             else [phantom(args.anatomy, args.size, args.perturbation, args.seed,
                           args.vary_layout)])
    if args.sweep:
        from hu_sweep import table  # this folder (the script's, on sys.path)

        for case in cases:
            table({**case, "name": case["name"].replace(" ", "-")})
        return
    for case in cases:
        bench_engines(case, args.device, args.skip_pyradplan, args.perturbation, grids,
                      args.recompute_only)


if __name__ == "__main__":
    main()
