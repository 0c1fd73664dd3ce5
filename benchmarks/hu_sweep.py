"""Dose metrics under the HU errors synthetic CTs make: ours vs pyRadPlan, per perturbation.

    # the sweep table on a phantom case (pyRadPlan's own environment needed: .venv-pyradplan,
    # or --reference-python); --save stores pyRadPlan's plans and values with the case
    PYTHONPATH=. .venv/bin/python benchmarks/hu_sweep.py --anatomy brain --size small \
        --seed 3 --vary-layout [--threads 1] [--reference-python PY] [--save new.json.gz]
    # ours vs the stored values again, without pyRadPlan (after a change of our engine):
    # every case in the file, rebuilt from what it stored; --markdown for a closing note
    PYTHONPATH=. .venv/bin/python benchmarks/hu_sweep.py --compare --reference new.json.gz \
        [--only brain-small-3-varied] [--modality proton] [--markdown [table.md]]
    # the test's cases: regenerate its reference values (minutes), or compare against them
    PYTHONPATH=. .venv/bin/python benchmarks/hu_sweep.py --write-reference
    PYTHONPATH=. .venv/bin/python benchmarks/hu_sweep.py --compare

Each case is planned once by pyRadPlan on its CT (its steering and weights, listed in the
plan); both engines then recompute that plan on the CT and on every perturbed sCT of
:data:`SWEEP` (systematic soft-tissue bias, scaled bone, noise, a local air/bone error), and
the dose metrics of each sCT (MAE in the target, gamma 2 %/2 mm) are compared.  The slab
case pins the range shift (distal R80 on the beam axis) per HU offset.

``--write-reference`` stores the plans (beamlets, weights) and pyRadPlan's values in
:data:`REFERENCE` so tests/evaluator/dose/test_hu_response.py checks our engine without
pyRadPlan.  ``--save`` stores the same for any case, with what rebuilds it (anatomy, size,
seed, vary_layout), a fingerprint of the phantom and pyRadPlan's recompute time; a case whose
phantom the generator no longer makes is skipped by ``--compare`` with the reason.  Each
case and modality ends with a summary line: the spread of the MAE's relative difference
over the perturbations and the largest gamma (or range shift) difference.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections.abc import Callable
from functools import partial
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
# and varied-layout cases (anatomy, size, seed, modality), named anatomy-size-seed-varied:
# the pelvis whose coarse dose grid showed how pyRadPlan assigns depths to voxels (engine
# model 9; its soft-tissue bias differed by 3 % before)
VARIED_TEST_CASES = (("pelvis", "small", 5, "proton"),)
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
            "descriptor": {"anatomy": anatomy, "size": size, "seed": seed,
                           "vary_layout": vary_layout},
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
    """pyRadPlan's plans and values for the slab, :data:`TEST_CASES` and
    :data:`VARIED_TEST_CASES` (or the ``only`` ones, by name, and the ``modalities``; the
    perturbations ``names``, default all); written after each case and modality, and one
    already in the file is kept: only the missing ones are computed (delete the file to
    recompute all)."""
    out = read_json(path) if path.is_file() else {"cases": {}}
    # name -> (what makes the case, the modalities the test checks on it)
    makers: dict[str, tuple[Callable[[], dict[str, Any]], tuple[str, ...]]] = {
        "slab": (slab_case, ("proton",))}
    makers |= {f"{a}-{s}-0": (partial(phantom_case, a, s), ("photon", "proton"))
               for a, s in TEST_CASES}
    makers |= {f"{a}-{s}-{seed}-varied": (partial(phantom_case, a, s, seed, True), (m,))
               for a, s, seed, m in VARIED_TEST_CASES}
    for name, (make, checked) in makers.items():
        if only and name not in only:
            continue
        case = make()
        entry = out["cases"].setdefault(
            case["name"], {"fingerprint": fingerprint(case["ct"], case["structures"])})
        for modality in case["plans"]:
            if (modality in entry or modality not in checked
                    or (modalities and modality not in modalities)):
                continue
            plan, values, t = reference(case, modality, names)
            print(f"{case['name']} {modality}: pyRadPlan recompute {t:.1f} s per sCT",
                  flush=True)
            entry[modality] = {"plan": _compact(plan), "pyradplan": values}
            print(case["name"], modality, json.dumps(values), flush=True)
            write_json(path, out)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


UNITS = {"mae_target": "MAE target", "gamma": "gamma %", "r80_shift_mm": "R80 shift mm"}
DIGITS = {"mae_target": 5}  # decimals shown (others: 2)


def _diff(key: str, a: float, b: float) -> str:
    """Ours (``b``) against pyRadPlan's (``a``): relative for the MAE, else absolute."""
    if key == "mae_target":
        return f"{100 * (b - a) / max(a, 1e-12):+.1f} %"
    return f"{b - a:+.2f} {'mm' if key.endswith('mm') else 'pp'}"


def _num(key: str, value: float) -> str:
    return f"{value:.{DIGITS.get(key, 2)}f}"


def summary(theirs: dict[str, dict[str, float]], mine: dict[str, dict[str, float]]
            ) -> str:
    """One line per case and modality: the spread of the MAE's relative difference and the
    largest absolute difference of every other metric, over the perturbations."""
    parts = []
    for key in next(iter(theirs.values())):
        if key == "mae_target":  # where the reference's MAE is 0 (no dose change) there is none
            rel = {n: 100 * (mine[n][key] - v[key]) / v[key] for n, v in theirs.items()
                   if v[key] > 1e-9} or {"": 0.0}
            text = f"MAE rel diff {min(rel.values()):+.1f} … {max(rel.values()):+.1f} %"
            # the systematic bias apart: the error that matters most, and a large MAE (the
            # noise and local errors' MAE can be ~1e-4 of Rx, where the grid decides)
            soft = [r for n, r in rel.items() if n.startswith("soft")]
            if soft and len(soft) < len(rel):
                text += f" (soft-tissue bias {min(soft):+.1f} … {max(soft):+.1f} %)"
            parts.append(text)
        else:
            d = max(abs(mine[n][key] - v[key]) for n, v in theirs.items())
            parts.append(f"max abs {UNITS.get(key, key).split()[0]} diff {d:.2f} "
                         f"{'mm' if key.endswith('mm') else 'pp'}")
    return ", ".join(parts)


def _print_rows(theirs: dict[str, dict[str, float]], mine: dict[str, dict[str, float]]
                ) -> None:
    for name, ref_v in theirs.items():
        cells = [f"{key} {a:8.5f} vs {mine[name][key]:8.5f} ({_diff(key, a, mine[name][key])})"
                 for key, a in ref_v.items()]
        print(f"  {name:8s} " + " | ".join(cells), flush=True)
    print(f"  summary: {summary(theirs, mine)}", flush=True)


# one compared case and modality: its name, modality, pyRadPlan's and our values per
# perturbation, our recompute time per sCT and pyRadPlan's (None where not known)
Result = tuple[str, str, dict[str, dict[str, float]], dict[str, dict[str, float]], float,
               float | None]


def markdown(results: list[Result]) -> str:
    """The comparison as markdown: a summary per case and modality, then a table per kind of
    case (phantom metrics, slab range shift) with a row per perturbation."""
    lines = ["| case | modality | summary (ours vs pyRadPlan) | recompute ours per sCT | "
             "pyRadPlan's (as stored), ours faster by |",
             "|---|---|---|---|---|"]
    for name, modality, theirs, mine, t_ours, t_ref in results:
        ref_s = "–" if t_ref is None else f"{t_ref:.2f} s ({t_ref / t_ours:.1f}x)"
        lines.append(f"| {name} | {modality} | {summary(theirs, mine)} | {t_ours:.2f} s | "
                     f"{ref_s} |")
    groups: dict[tuple[str, ...], list[Result]] = {}
    for r in results:
        groups.setdefault(tuple(next(iter(r[2].values()))), []).append(r)
    for keys, rows in groups.items():
        head = "".join(f" {UNITS.get(k, k)} pyRadPlan | ours | diff |" for k in keys)
        lines += ["", "| case | modality | perturbation |" + head,
                  "|---|---|---|" + "---|---|---|" * len(keys)]
        for name, modality, theirs, mine, _, _ in rows:
            for pert, ref_v in theirs.items():
                cells = "".join(f" {_num(k, a)} | {_num(k, mine[pert][k])} | "
                                f"{_diff(k, a, mine[pert][k])} |" for k, a in ref_v.items())
                lines.append(f"| {name} | {modality} | {pert} |" + cells)
    return "\n".join(lines) + "\n"


def case_descriptor(name: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    """What rebuilds a stored case with :func:`phantom_case` (None: the slab): the entry's
    ``case`` (written by ``--save``), else parsed from its name (``anatomy-size-seed``,
    ``-varied`` appended for a varied layout: the test's reference)."""
    if name == "slab":
        return None
    if "case" in entry:
        return dict(entry["case"])
    m = re.fullmatch(r"([a-z]+)-([a-z]+)-(\d+)(-varied)?", name)
    if m is None:
        raise ValueError(f"stored case {name!r} says neither how it was made nor follows "
                         "anatomy-size-seed[-varied]; store it again with --save")
    return {"anatomy": m[1], "size": m[2], "seed": int(m[3]), "vary_layout": bool(m[4])}


def rebuild(name: str, entry: dict[str, Any]) -> dict[str, Any] | None:
    """The stored case made again, or None (with the reason printed) where the phantom
    generator no longer makes the case pyRadPlan's values were computed on."""
    d = case_descriptor(name, entry)
    case = slab_case() if d is None else phantom_case(**d)
    if "fingerprint" in entry and entry["fingerprint"] != fingerprint(case["ct"],
                                                                      case["structures"]):
        print(f"\n{name}: skipped: the phantom generator no longer makes the case these "
              "values were computed on; compute them again (--save, or --write-reference "
              "for the test's cases)", file=sys.stderr, flush=True)
        return None
    return case


def compare_stored(path: Path = REFERENCE, only: tuple[str, ...] = (),
                   modalities: tuple[str, ...] = ()) -> list[Result]:
    """Our engine vs the stored reference values (pyRadPlan's, no pyRadPlan needed), per
    case, modality and perturbation, for every case in ``path`` (or the ``only`` ones):
    the test's comparison, or that of cases stored with ``--save``, as a table."""
    results: list[Result] = []
    for name, entry in read_json(path)["cases"].items():
        if only and name not in only:
            continue
        stored = [m for m in ("photon", "proton")
                  if m in entry and (not modalities or m in modalities)]
        case = rebuild(name, entry) if stored else None
        if case is None:
            continue
        for modality in stored:
            theirs = entry[modality]["pyradplan"]
            mine, t = ours(Plan.from_dict(entry[modality]["plan"]), case, tuple(theirs))
            t_ref = entry[modality].get("pyradplan_recompute_s")
            ref_s = "" if t_ref is None else f", pyRadPlan {t_ref:.2f} s as stored"
            print(f"\n{name} {modality} (pyRadPlan vs ours; ours {t:.2f} s per sCT{ref_s})")
            _print_rows(theirs, mine)
            results.append((name, modality, theirs, mine, t, t_ref))
    return results


def table(case: dict[str, Any], modalities: tuple[str, ...] = (),
          save: Path | None = None) -> list[Result]:
    """Print ours vs pyRadPlan per perturbation and both engines' recompute times; with
    ``save``, also store pyRadPlan's plan, values and recompute time there, with what
    rebuilds the case (``--compare --reference`` then redoes ours without pyRadPlan)."""
    results: list[Result] = []
    for modality in case["plans"]:
        if modalities and modality not in modalities:
            continue
        plan, theirs, t_ref = reference(case, modality)
        if save is not None:
            out = read_json(save) if save.is_file() else {"cases": {}}
            entry = out["cases"].setdefault(case["name"], {})
            if "descriptor" in case:  # what rebuilds the case for --compare
                entry["case"] = case["descriptor"]
                entry["fingerprint"] = fingerprint(case["ct"], case["structures"])
            entry[modality] = {"plan": _compact(plan), "pyradplan": theirs,
                               "pyradplan_recompute_s": round(t_ref, 2)}
            write_json(save, out)
        mine, t_ours = ours(plan, case, tuple(theirs))
        print(f"\n{case['name']} {modality}: recompute pyRadPlan {t_ref:.2f} s, ours "
              f"{t_ours:.2f} s ({t_ref / t_ours:.1f}x)")
        _print_rows(theirs, mine)
        results.append((case["name"], modality, theirs, mine, t_ours, t_ref))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--write-reference", action="store_true",
                   help="recompute the test's reference values into --reference")
    p.add_argument("--compare", action="store_true",
                   help="our engine vs the values stored in --reference (no pyRadPlan "
                        "needed), every case there; --only and --modality select")
    p.add_argument("--reference", "--out", dest="reference", type=Path, default=REFERENCE,
                   help=f"stored pyRadPlan values, for --write-reference and --compare "
                        f"(default: the test's, {REFERENCE.relative_to(REFERENCE.parents[3])})")
    p.add_argument("--only", nargs="*", default=[],
                   help="with --write-reference or --compare: only these cases (slab, "
                        "brain-small-0, brain-small-3-varied, ...); with --write-reference, "
                        "cases and modalities already stored are kept")
    p.add_argument("--perturbations", nargs="*", default=[], choices=list(SWEEP),
                   help="with --write-reference: only these (default: all; the test needs "
                        "one of each family: soft, bone, noise, local)")
    p.add_argument("--anatomy", default="brain", choices=["brain", "pelvis", "slab"])
    p.add_argument("--size", default="small", choices=["small", "medium", "realistic"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--vary-layout", action="store_true")
    p.add_argument("--modality", nargs="*", default=[], choices=["photon", "proton"],
                   help="only these modalities (also with --write-reference and --compare)")
    p.add_argument("--save", type=Path, default=None,
                   help="with a case (--anatomy ...): also store pyRadPlan's plans and values "
                        "in this JSON file (.gz: compressed), for --compare --reference FILE")
    p.add_argument("--markdown", nargs="?", const="-", default=None, metavar="FILE",
                   help="also write the table as markdown to FILE (no FILE: print it)")
    p.add_argument("--reference-python", type=Path, default=None,
                   help="the interpreter of pyRadPlan's own virtualenv (default: "
                        ".venv-pyradplan/bin/python in the repository)")
    p.add_argument("--threads", type=int, default=0, help="torch/BLAS threads (as a worker)")
    args = p.parse_args()
    if args.reference_python is not None:
        from evaluator.dose.engines.pyradplan_remote import set_reference_python

        set_reference_python(args.reference_python)
    if args.threads > 0:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    if args.write_reference:
        write_reference(args.reference, tuple(args.only), tuple(args.modality),
                        tuple(args.perturbations))
        return
    if args.compare:
        if not args.reference.is_file():
            raise SystemExit(f"no stored values at {args.reference}: store some with --save "
                             "FILE (a case and pyRadPlan's environment needed)")
        results = compare_stored(args.reference, tuple(args.only), tuple(args.modality))
    else:
        case = (slab_case() if args.anatomy == "slab"
                else phantom_case(args.anatomy, args.size, args.seed, args.vary_layout))
        results = table(case, tuple(args.modality), args.save)
    if args.markdown == "-":
        print("\n" + markdown(results), end="")
    elif args.markdown is not None:
        Path(args.markdown).write_text(markdown(results))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
