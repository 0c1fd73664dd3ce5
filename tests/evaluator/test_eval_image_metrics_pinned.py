"""Image metrics pinned bit for bit: speed-ups must not change a single bit of any result.

``data/image_metrics_pinned.json`` holds ``float.hex`` of every value that
``compute_image_metrics`` returned, before the speed-ups of issue 20, on the cases below
(generated inputs: both profiles; float32, float64 and int16 images; bool, uint8 and float
masks; off-centre and border masks; non-finite values inside and outside the mask; the
SynthRAD2025 paths for fewer than 97 slices and for slices narrower than 97 voxels).
The last bits depend on the CPU's vector width (torch's reductions treat the tail of a row
that does not fill the vector differently; numpy's exp/log have AVX-512 versions), so the
test runs where torch reports the CPU capability the values were recorded with. Regenerate
only for an intended change of the values:

    PYTHONPATH=. python -m tests.evaluator.test_eval_image_metrics_pinned > \
        tests/evaluator/data/image_metrics_pinned.json
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evaluator.image_metrics import PROFILES, compute_image_metrics

from .conftest import make_pair

PINNED = Path(__file__).parent / "data" / "image_metrics_pinned.json"
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def cases() -> Iterator[tuple[str, Arrays]]:
    # planes of ~100 x 130 voxels: long enough rows for every vectorised code path
    ct, sct, mask = make_pair((40, 104, 131), seed=21, radii=(1.1, 0.8, 0.7))
    yield "f64-bool", (ct, sct, mask)
    yield "f32-u8", (ct.astype(np.float32), sct.astype(np.float32), mask.astype(np.uint8))
    yield "i16-f32mask", (np.round(ct).astype(np.int16), np.round(sct).astype(np.int16),
                          mask.astype(np.float32) * 2.0 - 0.5)
    rng = np.random.default_rng(22)
    outside, inside = np.flatnonzero(~mask), np.flatnonzero(mask)
    c2, s2 = ct.copy(), sct.copy()
    c2.flat[rng.choice(outside, 40)] = np.nan
    s2.flat[rng.choice(outside, 40)] = np.inf
    c2.flat[rng.choice(outside, 40)] = -np.inf
    yield "nonfinite-outside", (c2, s2, mask)
    c3 = ct.copy()
    c3.flat[rng.choice(inside, 2)] = np.inf
    yield "inf-inside", (c3, sct, mask)
    yield "off-centre", make_pair((36, 100, 120), seed=23, center=(0.4, -0.5, 0.5),
                                  radii=(0.5, 0.4, 0.45))
    yield "border", make_pair((30, 98, 99), seed=24, radii=(1.4, 1.3, 1.3))
    yield "100-slices", make_pair((100, 98, 97), seed=25)
    yield "narrow-slices", make_pair((24, 60, 130), seed=26)


def compute_all() -> dict[str, Any]:
    out = {}
    for name, arrays in cases():
        for profile in PROFILES:
            for threads in (1, 2):
                got = compute_image_metrics(*arrays, profile, threads=threads)
                out[f"{name}/{profile}/threads={threads}"] = {k: v.hex() for k, v in got.items()}
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "values": out}


def test_values_are_pinned_bit_for_bit() -> None:
    pinned = json.loads(PINNED.read_text())
    if torch.backends.cpu.get_cpu_capability() != pinned["torch_cpu_capability"]:
        pytest.skip(f"values pinned on a {pinned['torch_cpu_capability']} CPU")
    want: dict[str, Any] = pinned["values"]
    got = compute_all()["values"]
    assert set(got) == set(want)
    differ = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not differ
    # the non-finite cases mean something: an infinite CT voxel in the mask makes the MAE
    # infinite but is clipped for the rest; non-finite voxels outside the mask count nowhere
    inf_inside = {k: float.fromhex(v) for k, v in want["inf-inside/synthrad2023/threads=1"].items()}
    assert inf_inside["mae"] == math.inf and math.isfinite(inf_inside["ssim"])
    outside = want["nonfinite-outside/synthrad2025/threads=1"].values()
    assert all(math.isfinite(float.fromhex(v)) for v in outside)


def test_concurrent_threads_give_the_pinned_values() -> None:
    # the map passes reuse per-thread buffers between calls: threads must not share them
    pinned = json.loads(PINNED.read_text())
    if torch.backends.cpu.get_cpu_capability() != pinned["torch_cpu_capability"]:
        pytest.skip(f"values pinned on a {pinned['torch_cpu_capability']} CPU")
    jobs = [(name, arrays, profile) for name, arrays in cases() for profile in PROFILES]

    def run(job: tuple[str, Arrays, str]) -> tuple[str, dict[str, str]]:
        name, arrays, profile = job
        got = compute_image_metrics(*arrays, profile)
        return f"{name}/{profile}/threads=1", {k: v.hex() for k, v in got.items()}

    with ThreadPoolExecutor(3) as pool:
        got = dict(pool.map(run, jobs))
    assert got == {k: pinned["values"][k] for k in got}
    assert len(got) == len(jobs)


if __name__ == "__main__":
    print(json.dumps(compute_all(), indent=1, sort_keys=True))
