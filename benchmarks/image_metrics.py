"""Time the SynthRAD image metrics: ours (torch) vs the numpy/scipy/scikit-image reference.

    .venv/bin/python benchmarks/image_metrics.py [--device cpu|cuda] [--only pelvis|brain]
        [--profiles synthrad2023 synthrad2025] [--repeat N]

Volumes are realistic-size phantoms (pelvis 512x512x150, brain 256x256x200) with a synthetic
CT made from the CT by adding a smooth error field, noise and a slight blur. For each volume
and profile it prints our time (best of --repeat), the reference time (one run, same process
and CPU), the ratio and the largest absolute difference over the three metric values. Times
are wall-clock; the CPU time of this process is printed too, because on a shared machine the
wall-clock time also measures the neighbours.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from evaluator.image_metrics import compute_image_metrics
from evaluator.phantoms import make_case
from evaluator.reference_metrics import reference_image_metrics

VOLUMES = {"pelvis": "pelvis 512x512x150", "brain": "brain 256x256x200"}


def make_pair(anatomy: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    case = make_case(anatomy, "realistic", np.random.default_rng(seed))
    ct = case["ct"].astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    error = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (16, 32, 32)), 2.0)
    error = ndimage.zoom(error, [n / m for n, m in zip(ct.shape, error.shape, strict=True)],
                         order=1)[: ct.shape[0], : ct.shape[1], : ct.shape[2]]
    sct = ndimage.gaussian_filter(ct, 0.8) + 400.0 * error.astype(np.float32)
    sct += rng.normal(0.0, 20.0, ct.shape).astype(np.float32)
    return ct, sct, case["mask"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=list(VOLUMES), default=None)
    parser.add_argument("--profiles", nargs="+", default=["synthrad2023", "synthrad2025"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-reference", action="store_true", help="time ours only")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for our code (compute_image_metrics' default 1)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {args.threads}, device {args.device}")
    print(f"{'volume':20} {'profile':13} {'ours s':>8} {'ref s':>8} {'ratio':>7} "
          f"{'max|diff|':>10} {'ours cpu':>9} {'ref cpu':>8} {'cpu ratio':>9}")
    for anatomy, label in VOLUMES.items():
        if args.only and anatomy != args.only:
            continue
        ct, sct, mask = make_pair(anatomy)
        for profile in args.profiles:
            z, y, x = (n // 2 for n in ct.shape)
            warm = (slice(z - 20, z + 20), slice(y - 50, y + 50), slice(x - 50, x + 50))
            compute_image_metrics(ct[warm], sct[warm], mask[warm], profile, args.device,
                                  threads=args.threads)
            best, best_cpu = float("inf"), float("inf")
            ours: dict[str, float] = {}
            for _ in range(max(1, args.repeat)):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time()
                ours = compute_image_metrics(ct, sct, mask, profile, args.device,
                                             threads=args.threads)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            if args.no_reference:
                print(f"{label:20} {profile:13} {best:8.2f} {'-':>8} {'-':>7} {'-':>10} "
                      f"{best_cpu:9.2f}  {ours}")
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            ref = reference_image_metrics(ct, sct, mask, profile)
            ref_time, ref_cpu = time.perf_counter() - t0, time.process_time() - c0
            diff = max(abs(ours[k] - ref[k]) for k in ref)
            print(f"{label:20} {profile:13} {best:8.2f} {ref_time:8.2f} "
                  f"{ref_time / best:6.1f}x {diff:10.2e} {best_cpu:9.2f} {ref_cpu:8.2f} "
                  f"{ref_cpu / best_cpu:8.1f}x  {ours}", flush=True)


if __name__ == "__main__":
    main()
