"""Time the SynthRAD image metrics: ours (torch) vs the numpy/scipy/scikit-image reference.

    .venv/bin/python benchmarks/image_metrics.py [--device cpu|cuda] [--only NAME ...]
        [--profiles synthrad2023 synthrad2025] [--repeat N] [--baseline GIT_REV] [--cli]
        [--torch-path]

Volumes are realistic-size phantoms (pelvis 96x384x384 -- the realistic pelvis resampled to
a common SynthRAD size --, pelvis 512x512x150, brain 256x256x200) with a synthetic CT made
from the CT by adding a smooth error field, noise and a slight blur. For each volume and
profile it prints our time (min and median of --repeat runs, wall and CPU), the reference
time (one run, same process), the ratio of the reference to our median, the largest absolute
difference over the three metric values, and our time per phase (median run). Times are
wall-clock; CPU time of this process is printed too (with the reference's CPU time and the
ratio of CPU times), because on a shared machine the wall-clock time also measures the
neighbours.

``--baseline REV`` also times evaluator/image_metrics.py as of git revision REV, in the same
process, interleaved with ours (the old figures beside the new). ``--torch-path`` also times
ours with ``fused=False`` (torch's passes instead of the numba loops of
evaluator/image_kernels.py; the same bits). A warm-up call on a small crop precedes the
timed runs (numba's start-up and loading of its cached code, ~0.8 CPU s once per process,
is not timed; the CLI, one case per process, does not use the numba loops). ``--cli`` also times
``python -m evaluator image-metrics`` on .mha files (uncompressed and zlib-compressed) in
fresh processes (with ``--baseline``, that revision's CLI in turn with ours), less the
start-up of ``python -c "import torch"`` (run in turn with it),
and prints the CLI's own phase split (read, check, compute phases); the same difference in
CPU seconds (the children's rusage) is printed beside it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from evaluator.image_metrics import compute_image_metrics
from evaluator.io import write_volume
from evaluator.phantoms import make_case
from evaluator.reference_metrics import reference_image_metrics

ROOT = Path(__file__).resolve().parents[1]
VOLUMES = {"pelvis96": ("pelvis", (96, 384, 384)), "pelvis": ("pelvis", None),
           "brain": ("brain", None)}
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def make_pair(anatomy: str, seed: int = 0, shape: tuple[int, int, int] | None = None) -> Arrays:
    case = make_case(anatomy, "realistic", np.random.default_rng(seed))
    ct, mask = case["ct"].astype(np.float32), case["mask"]
    if shape is not None:  # resample (linear; nearest for the mask)
        zoom = [n / m for n, m in zip(shape, ct.shape, strict=True)]
        ct = ndimage.zoom(ct, zoom, order=1)[: shape[0], : shape[1], : shape[2]]
        mask = ndimage.zoom(mask.astype(np.uint8), zoom, order=0)[
            : shape[0], : shape[1], : shape[2]].astype(bool)
    rng = np.random.default_rng(seed + 1)
    error = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (16, 32, 32)), 2.0)
    error = ndimage.zoom(error, [n / m for n, m in zip(ct.shape, error.shape, strict=True)],
                         order=1)[: ct.shape[0], : ct.shape[1], : ct.shape[2]]
    sct = ndimage.gaussian_filter(ct, 0.8) + 400.0 * error.astype(np.float32)
    sct += rng.normal(0.0, 20.0, ct.shape).astype(np.float32)
    return ct, sct, mask


def baseline_module(rev: str) -> Callable[..., dict[str, float]]:
    """compute_image_metrics of evaluator/image_metrics.py at git revision ``rev``."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:evaluator/image_metrics.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "image_metrics_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("image_metrics_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    fn: Callable[..., dict[str, float]] = module.compute_image_metrics
    return fn


def fmt_times(wall: list[float], cpu: list[float]) -> str:
    return (f"{min(wall):6.3f} {statistics.median(wall):6.3f} "
            f"{min(cpu):6.3f} {statistics.median(cpu):6.3f}")


def time_in_process(args: argparse.Namespace, arrays: Arrays, profile: str,
                    fns: dict[str, Callable[..., dict[str, float]]]) -> dict[str, Any]:
    ct, sct, mask = arrays
    z, y, x = (n // 2 for n in ct.shape)
    warm = (slice(z - 20, z + 20), slice(y - 50, y + 50), slice(x - 50, x + 50))
    runs: dict[str, Any] = {name: {"wall": [], "cpu": [], "phases": []} for name in fns}
    for fn in fns.values():
        fn(ct[warm], sct[warm], mask[warm], profile, args.device, threads=args.threads)
    for _ in range(max(1, args.repeat)):
        for name, fn in fns.items():  # interleaved: drifts of the machine hit both alike
            phases: dict[str, float] = {}
            extra = {"timings": phases} if name == "ours" else {}
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            runs[name]["values"] = fn(ct, sct, mask, profile, args.device,
                                      threads=args.threads, **extra)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            runs[name]["wall"].append(time.perf_counter() - t0)
            runs[name]["cpu"].append(time.process_time() - c0)
            runs[name]["phases"].append(phases)
    return runs


def run_wall(cmd: list[str], tree: Path = ROOT) -> tuple[float, float, str]:
    """Wall and CPU (user + system) seconds of a fresh process run from ``tree``, and its
    stderr."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=tree, env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return time.perf_counter() - t0, cpu, done.stderr


def evaluator_checkout(rev: str, dest: Path) -> Path:
    """The evaluator package as of git revision ``rev`` (for its CLI)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev,
                              "evaluator"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


# ``python -m evaluator ARGS`` that also reports (last line on stderr) the CPU and wall
# seconds after the interpreter started and imported torch (and numpy, which it imports):
# the CLI's own cost measured inside one process, not as a difference of two noisy runs.
CLI_AFTER_START = """\
import json, resource, sys, time
import torch
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.perf_counter()
from evaluator.cli import main
code = main(sys.argv[1:])
print(json.dumps({"cpu": cpu() - c0, "wall": time.perf_counter() - t0}), file=sys.stderr)
sys.exit(code)
"""


def time_cli(args: argparse.Namespace, arrays: Arrays, profile: str, tmp: Path,
             ref_time: float, ref_cpu: float) -> list[str]:
    """The CLI in fresh processes, each run paired with a ``python -c "import torch"`` run
    (start-up): the median of the pairs' differences is robust to a machine whose speed
    drifts between runs. Each CLI process also reports its CPU and wall seconds after
    ``import torch`` (:data:`CLI_AFTER_START`): on a loaded machine that is the steadier
    figure. With ``--baseline`` the CLI of that revision runs in turn with ours."""
    lines = []
    startup = [sys.executable, "-c", "import torch"]
    trees = {"ours": ROOT}
    if args.baseline:
        trees["baseline"] = tmp / f"cli-{args.baseline}"
        if not trees["baseline"].exists():
            evaluator_checkout(args.baseline, trees["baseline"])
    for compress in (False, True):
        names = {}
        for name, a in zip(("ct", "sct", "mask"), arrays, strict=True):
            names[name] = write_volume(tmp / f"{name}{'_z' if compress else ''}.mha",
                                       a.astype(np.uint8) if name == "mask" else a,
                                       spacing=(1.0, 1.0, 2.5), compress=compress)
        cmd = [sys.executable, "-c", CLI_AFTER_START, "image-metrics", "--profile", profile,
               "--timings", *(f"--{k}={v}" for k, v in names.items())]
        runs: dict[str, dict[str, list[Any]]] = {
            label: {"walls": [], "less": [], "cpu_less": [], "phases": [], "after": []}
            for label in trees}
        for _ in range(max(1, args.repeat)):
            for label, tree in trees.items():  # in turn: drifts of the machine hit both
                base, base_cpu, _err = run_wall(startup)
                wall, cpu, err = run_wall(cmd, tree)
                run = runs[label]
                run["walls"].append(wall)
                run["less"].append(wall - base)
                run["cpu_less"].append(cpu - base_cpu)
                last = err.strip().splitlines()
                run["phases"].append(json.loads(last[-2]))
                run["after"].append(json.loads(last[-1]))
        for label, run in runs.items():
            less, cpu_less = run["less"], run["cpu_less"]
            med, cpu_med = statistics.median(less), statistics.median(cpu_less)
            split = run["phases"][less.index(sorted(less)[len(less) // 2])]
            after_cpu = statistics.median(a["cpu"] for a in run["after"])
            after_wall = statistics.median(a["wall"] for a in run["after"])
            lines.append(
                f"  CLI {label:8} {'zlib' if compress else 'raw '} .mha: wall median "
                f"{statistics.median(run['walls']):.2f} s; less start-up min {min(less):.2f} "
                f"median {med:.2f} s, reference / that {ref_time / med:.1f}x; CPU less "
                f"start-up median {cpu_med:.2f} s, reference CPU / that "
                f"{ref_cpu / cpu_med:.1f}x; after import torch (in process): CPU median "
                f"{after_cpu:.2f} s, reference CPU / that {ref_cpu / after_cpu:.1f}x, wall "
                f"median {after_wall:.2f} s, reference / that {ref_time / after_wall:.1f}x; "
                "phases (wall) " + " ".join(f"{k} {v:.3f}" for k, v in split.items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="+", choices=list(VOLUMES), default=None)
    parser.add_argument("--profiles", nargs="+", default=["synthrad2023", "synthrad2025"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    parser.add_argument("--baseline", metavar="GIT_REV",
                        help="also time evaluator/image_metrics.py as of this revision")
    parser.add_argument("--cli", action="store_true", help="also time the CLI on .mha files")
    parser.add_argument("--torch-path", action="store_true",
                        help="also time ours with fused=False (torch's passes, no numba)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for our code (compute_image_metrics' default 1)")
    args = parser.parse_args()
    fns: dict[str, Callable[..., dict[str, float]]] = {"ours": compute_image_metrics}
    if args.torch_path:
        fns["torch"] = functools.partial(compute_image_metrics, fused=False)
    if args.baseline:
        fns["baseline"] = baseline_module(args.baseline)
    print(f"torch {torch.__version__}, threads {args.threads}, device {args.device}, "
          f"repeat {args.repeat}")
    print(f"{'volume':18} {'profile':13} {'code':8} {'wall min/med s':>14} "
          f"{'cpu min/med s':>14} {'ref s':>7} {'ref/med':>8} {'max|diff|':>9}")
    with tempfile.TemporaryDirectory() as tmpdir:
        for key, (anatomy, shape) in VOLUMES.items():
            if args.only and key not in args.only:
                continue
            arrays = make_pair(anatomy, shape=shape)
            label = f"{anatomy} " + "x".join(str(n) for n in arrays[0].shape[::-1])
            for profile in args.profiles:
                runs = time_in_process(args, arrays, profile, fns)
                ref_time, ref_cpu, ref = float("nan"), float("nan"), None
                if not args.no_reference:
                    t0, c0 = time.perf_counter(), time.process_time()
                    ref = reference_image_metrics(*arrays, profile)
                    ref_time = time.perf_counter() - t0
                    ref_cpu = time.process_time() - c0
                for name, run in runs.items():
                    med = statistics.median(run["wall"])
                    cpu_med = statistics.median(run["cpu"])
                    diff = (max(abs(run["values"][k] - ref[k]) for k in ref) if ref
                            else float("nan"))
                    print(f"{label:18} {profile:13} {name:8} {fmt_times(run['wall'], run['cpu'])} "
                          f"{ref_time:7.2f} {ref_time / med:7.1f}x {diff:9.1e}  (CPU: ref "
                          f"{ref_cpu:.2f} s, ref/med {ref_cpu / cpu_med:.1f}x)", flush=True)
                phases = runs["ours"]["phases"]
                mid = phases[runs["ours"]["wall"].index(sorted(runs["ours"]["wall"])[
                    len(phases) // 2])]
                print("  ours per phase (s): " + " ".join(f"{k} {v:.3f}"
                                                          for k, v in mid.items()))
                if args.cli:
                    for line in time_cli(args, arrays, profile, Path(tmpdir), ref_time,
                                         ref_cpu):
                        print(line, flush=True)


if __name__ == "__main__":
    main()
