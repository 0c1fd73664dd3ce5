"""Dose metrics under the HU errors synthetic CTs make: ours vs pyRadPlan, per perturbation.

    # the sweep table on phantom cases (pyRadPlan's own environment, .venv-pyradplan, needed)
    PYTHONPATH=. .venv/bin/python benchmarks/hu_sweep.py --anatomy brain --size small \
        --seed 3 --vary-layout [--threads 1]
    # regenerate the reference values the tests compare against (minutes)
    PYTHONPATH=. .venv/bin/python benchmarks/hu_sweep.py --write-reference

Each case is planned once by pyRadPlan on its CT (its steering and weights, listed in the
plan); both engines then recompute that plan on the CT and on every perturbed sCT of
:data:`SWEEP` (systematic soft-tissue bias, scaled bone, noise, a local air/bone error), and
the dose metrics of each sCT (MAE in the target, gamma 2 %/2 mm) are compared.  The slab
case pins the range shift (distal R80 on the beam axis) per HU offset.

``--write-reference`` stores the plans (beamlets, weights) and pyRadPlan's values in
:data:`REFERENCE` so tests/evaluator/dose/test_hu_response.py checks our engine without
pyRadPlan.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from evaluator.dose.engines.torch_pb import TorchPencilBeamEngine
from evaluator.dose.gamma import GammaSettings
from evaluator.dose.metrics import dose_metrics
from evaluator.dose.phantom_plans import make_phantom_plans, make_phantom_structures
from evaluator.dose.plan import Beam, Plan
from evaluator.phantoms import make_case

REFERENCE = Path(__file__).resolve().parents[1] / "tests/evaluator/data/hu_sweep_reference.json.gz"
# the test's cases (seed 0, fixed layout), two sizes per site (issue 19)
TEST_CASES = (("brain", "small"), ("pelvis", "small"), ("brain", "medium"), ("pelvis", "medium"))
SOFT = (-500.0, 300.0)  # HU range treated as soft tissue by the perturbations
BONE_HU = 300.0


def _soft(ct: np.ndarray) -> np.ndarray:
    return (ct > SOFT[0]) & (ct < SOFT[1])


def _offset(hu: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    return lambda ct, rng: np.where(_soft(ct), ct + hu, ct)


def _bone(scale: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    return lambda ct, rng: np.where(ct >= BONE_HU, ct * scale, ct)


def _noise(ct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.where(ct > SOFT[0], ct + rng.normal(0.0, 40.0, ct.shape), ct)


def _local(ct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An air pocket and a spurious bone blob, each ~6 voxels across, at two random places
    inside the body (at least 4 voxels from its surface)."""
    inner = ndimage.binary_erosion(ct > SOFT[0], iterations=4)
    idx = np.argwhere(inner)
    out = ct.copy()
    grid = np.indices(ct.shape).astype(np.float32)
    for value in (-1000.0, 900.0):
        c = idx[rng.integers(len(idx))]
        blob = sum((g - float(ci)) ** 2 for g, ci in zip(grid, c, strict=True)) < 3.0**2
        out[blob & inner] = value
    return out


SWEEP: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "soft+30": _offset(30.0), "soft-30": _offset(-30.0),
    "soft+60": _offset(60.0), "soft-60": _offset(-60.0),
    "bone+4%": _bone(1.04), "bone-4%": _bone(0.96),
    "noise40": _noise, "local": _local,
}
FAMILIES = ("soft", "bone", "noise", "local")  # name prefixes of the kinds of error
SLAB_SWEEP = ("soft+30", "soft-30", "soft+60", "soft-60", "bone+4%", "bone-4%")


def perturbed(ct: np.ndarray, name: str, seed: int = 1) -> np.ndarray:
    """The CT with perturbation ``name`` of :data:`SWEEP` (deterministic for a seed)."""
    return np.asarray(SWEEP[name](ct, np.random.default_rng(seed)), dtype=np.float32)


def fingerprint(ct: np.ndarray, structures: np.ndarray) -> list[float]:
    """A few numbers that change when the phantom generator's output does."""
    return [float(np.round(ct.astype(np.float64).mean(), 3)),
            float(np.round(ct.astype(np.float64).std(), 3)),
            float(np.count_nonzero(structures == 2)), float(np.count_nonzero(structures))]


def phantom_case(anatomy: str, size: str, seed: int = 0, vary_layout: bool = False
                 ) -> dict[str, Any]:
    case = make_case(anatomy, size, np.random.default_rng(seed), vary_layout=vary_layout)
    structures, _ = make_phantom_structures(case["labels"], anatomy, case["layout"])
    return {"name": f"{anatomy}-{size}-{seed}{'-varied' if vary_layout else ''}",
            "ct": case["ct"].astype(np.float32), "structures": structures,
            "spacing": tuple(float(s) for s in case["spacing"]),
            "plans": make_phantom_plans(case["labels"], case["spacing"], anatomy,
                                        case["layout"])}


def slab_case() -> dict[str, Any]:
    """Water box (HU 20) with a 10 mm bone layer (HU 800) across the beam, a box target
    behind it; one proton beam from gantry 0 (along +y)."""
    n, sp = (40, 64, 40), (3.0, 3.0, 3.0)
    ct = np.full(n, -1000.0, np.float32)
    ct[:, 6:58, :] = 20.0
    ct[:, 16:19, :] = 800.0
    st = np.zeros(n, np.uint8)
    st[ct > -500] = 1
    st[14:26, 30:42, 14:26] = 2
    plan = Plan(modality="proton", prescription_gy=2.0, target="PTV",
                structures={"BODY": 1, "PTV": 2}, beams=[Beam(0.0)], bixel_width_mm=5.0,
                dose_grid_mm=3.0, structure_file="structures.mha")
    return {"name": "slab", "ct": ct, "structures": st, "spacing": sp,
            "plans": {"proton": plan}}


def axis_r80(dose: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Distal R80 (mm along +y) of the slab's depth dose: the mean over the target's
    central 4x4 columns, 80 % of its maximum, linear between voxels."""
    prof = dose[18:22, :, 18:22].mean(axis=(0, 2)).astype(np.float64)
    i = int(np.argmax(prof))
    below = np.flatnonzero(prof[i:] < 0.8 * prof[i])
    j = i + int(below[0])
    f0, f1 = prof[j - 1], prof[j]
    return float(spacing[1] * (j - 1 + (f0 - 0.8 * prof[i]) / (f0 - f1)))


def _metrics(plan: Plan, d_ct: np.ndarray, d_sct: np.ndarray, case: dict[str, Any]
             ) -> dict[str, float]:
    st = case["structures"]
    m = dose_metrics(d_ct, d_sct, case["spacing"], plan.mask(st, plan.target),
                     {o: st == plan.structures[o] for o in plan.oars}, plan.prescription_gy,
                     plan.modality, GammaSettings())
    return {"mae_target": m[f"mae_target_{plan.modality}"], "gamma": m[f"gamma_{plan.modality}"]}


def sweep_engine(compute: Callable[[np.ndarray], np.ndarray], plan: Plan,
                 case: dict[str, Any], names: tuple[str, ...] = tuple(SWEEP),
                 ) -> tuple[dict[str, dict[str, float]], float]:
    """One engine's metrics per perturbation (``compute``: sCT HU -> dose) and its mean
    recompute time."""
    d_ct = compute(case["ct"])
    out, times = {}, []
    for name in names:
        sct = perturbed(case["ct"], name)
        t = time.perf_counter()
        d = compute(sct)
        times.append(time.perf_counter() - t)
        if case["name"] == "slab":
            sp = case["spacing"]
            out[name] = {"r80_shift_mm": axis_r80(d, sp) - axis_r80(d_ct, sp)}
        else:
            out[name] = _metrics(plan, d_ct, d, case)
    return out, float(np.mean(times))


def ours(plan: Plan, case: dict[str, Any], names: tuple[str, ...] = tuple(SWEEP),
         ) -> tuple[dict[str, dict[str, float]], float]:
    """Our engine recomputing the plan's listed (pyRadPlan's) beamlets and weights."""
    engine = TorchPencilBeamEngine()
    ct, sp, st = case["ct"], case["spacing"], case["structures"]
    return sweep_engine(lambda sct: engine.compute(sct, sp, plan, st, ct), plan, case, names)


def reference(case: dict[str, Any], modality: str, names: tuple[str, ...] = ()
              ) -> tuple[Plan, dict[str, Any], float]:
    """pyRadPlan's plan of the case (beamlets listed, weights) and its sweep (all of
    :data:`SWEEP`, or ``names``)."""
    from evaluator.dose.engines.pyradplan import PyRadPlanEngine

    ref = PyRadPlanEngine()
    ct, sp, st = case["ct"], case["spacing"], case["structures"]
    t0 = time.perf_counter()
    plan = ref.plan_with_beamlets(ct, sp, case["plans"][modality], st)
    print(f"{case['name']} {modality}: pyRadPlan planned in {time.perf_counter() - t0:.0f} s",
          flush=True)
    names = names or (SLAB_SWEEP if case["name"] == "slab" else tuple(SWEEP))
    values, t = sweep_engine(lambda sct: ref.compute(sct, sp, plan, st, ct), plan, case, names)
    return plan, values, t


def _compact(plan: Plan) -> dict[str, Any]:
    """The plan as stored with the reference: floats rounded to what they mean."""
    d = plan.to_dict()
    d["weights"] = {"torch_pb": [float(f"{w:.6g}") for w in plan.weights["torch_pb"]]}
    d["beamlets"] = [{k: [round(x, 3) for x in v] for k, v in b.items() if k != "energy_mev"}
                     for b in d["beamlets"]]
    return d


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file, gzip-compressed where its name ends in .gz."""
    raw = path.read_bytes()
    return dict(json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw))


def write_json(path: Path, data: dict[str, Any]) -> None:
    raw = json.dumps(data, separators=(",", ":")).encode()
    path.write_bytes(gzip.compress(raw, mtime=0) if path.suffix == ".gz" else raw)


def write_reference(path: Path = REFERENCE, only: tuple[str, ...] = (),
                    modalities: tuple[str, ...] = (), names: tuple[str, ...] = ()) -> None:
    """pyRadPlan's plans and values for the slab and :data:`TEST_CASES` (or the ``only``
    ones, by name, and the ``modalities``; the perturbations ``names``, default all);
    written after each case and modality, and one already in the file is kept: only the
    missing ones are computed (delete the file to recompute all)."""
    out = read_json(path) if path.is_file() else {"cases": {}}
    makers = {"slab": slab_case} | {f"{a}-{s}-0": (lambda a=a, s=s: phantom_case(a, s))
                                    for a, s in TEST_CASES}
    for name, make in makers.items():
        if only and name not in only:
            continue
        case = make()
        entry = out["cases"].setdefault(
            case["name"], {"fingerprint": fingerprint(case["ct"], case["structures"])})
        for modality in case["plans"]:
            if modality in entry or (modalities and modality not in modalities):
                continue
            plan, values, t = reference(case, modality, names)
            print(f"{case['name']} {modality}: pyRadPlan recompute {t:.1f} s per sCT",
                  flush=True)
            entry[modality] = {"plan": _compact(plan), "pyradplan": values}
            print(case["name"], modality, json.dumps(values), flush=True)
            write_json(path, out)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def _print_rows(theirs: dict[str, dict[str, float]], mine: dict[str, dict[str, float]]
                ) -> None:
    for name, ref_v in theirs.items():
        cells = []
        for key, a in ref_v.items():
            b = mine[name][key]
            rel = (f"{100 * (b - a) / max(a, 1e-12):+6.1f} %" if key == "mae_target"
                   else f"{b - a:+6.2f} {'mm' if key.endswith('mm') else 'pp'}")
            cells.append(f"{key} {a:8.5f} vs {b:8.5f} ({rel})")
        print(f"  {name:8s} " + " | ".join(cells), flush=True)


def compare_stored(path: Path = REFERENCE, only: tuple[str, ...] = (),
                   modalities: tuple[str, ...] = ()) -> None:
    """Our engine vs the stored reference values (pyRadPlan's, no pyRadPlan needed), per
    case, modality and perturbation: the test's comparison as a table."""
    stored = read_json(path)["cases"]
    makers = {"slab": slab_case} | {f"{a}-{s}-0": (lambda a=a, s=s: phantom_case(a, s))
                                    for a, s in TEST_CASES}
    for name, make in makers.items():
        if (only and name not in only) or name not in stored:
            continue
        case = make()
        for modality, entry in stored[name].items():
            if modality == "fingerprint" or (modalities and modality not in modalities):
                continue
            theirs = entry["pyradplan"]
            mine, t = ours(Plan.from_dict(entry["plan"]), case, tuple(theirs))
            print(f"\n{name} {modality} (pyRadPlan vs ours; ours {t:.2f} s per sCT)")
            _print_rows(theirs, mine)


def table(case: dict[str, Any], modalities: tuple[str, ...] = (),
          save: Path | None = None) -> None:
    """Print ours vs pyRadPlan per perturbation and both engines' recompute times; with
    ``save``, also store pyRadPlan's plan and values there (like the test's reference)."""
    for modality in case["plans"]:
        if modalities and modality not in modalities:
            continue
        plan, theirs, t_ref = reference(case, modality)
        if save is not None:
            out = read_json(save) if save.is_file() else {"cases": {}}
            out["cases"].setdefault(case["name"], {})[modality] = {
                "plan": _compact(plan), "pyradplan": theirs}
            write_json(save, out)
        mine, t_ours = ours(plan, case, tuple(theirs))
        print(f"\n{case['name']} {modality}: recompute pyRadPlan {t_ref:.2f} s, ours "
              f"{t_ours:.2f} s ({t_ref / t_ours:.1f}x)")
        _print_rows(theirs, mine)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write-reference", action="store_true",
                   help=f"recompute the test's reference values into {REFERENCE}")
    p.add_argument("--only", nargs="*", default=[],
                   help="with --write-reference: only these cases (slab, brain-small-0, "
                        "brain-medium-0, ...); cases and modalities already stored are kept")
    p.add_argument("--perturbations", nargs="*", default=[], choices=list(SWEEP),
                   help="with --write-reference: only these (default: all; the test needs "
                        "one of each family: soft, bone, noise, local)")
    p.add_argument("--compare", action="store_true",
                   help="our engine vs the stored reference values (no pyRadPlan needed); "
                        "--only and --modality select")
    p.add_argument("--out", type=Path, default=REFERENCE, help="with --write-reference")
    p.add_argument("--anatomy", default="brain", choices=["brain", "pelvis", "slab"])
    p.add_argument("--size", default="small", choices=["small", "medium", "realistic"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--vary-layout", action="store_true")
    p.add_argument("--modality", nargs="*", default=[], choices=["photon", "proton"],
                   help="only these modalities (also with --write-reference)")
    p.add_argument("--save", type=Path, default=None,
                   help="also store pyRadPlan's plans and values in this JSON file")
    p.add_argument("--threads", type=int, default=0, help="torch/BLAS threads (as a worker)")
    args = p.parse_args()
    if args.threads > 0:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    if args.write_reference:
        write_reference(args.out, tuple(args.only), tuple(args.modality),
                        tuple(args.perturbations))
    elif args.compare:
        compare_stored(args.out, tuple(args.only), tuple(args.modality))
    elif args.anatomy == "slab":
        table(slab_case(), tuple(args.modality), args.save)
    else:
        table(phantom_case(args.anatomy, args.size, args.seed, args.vary_layout),
              tuple(args.modality), args.save)


if __name__ == "__main__":
    main()
