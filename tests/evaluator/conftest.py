from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from evaluator.phantoms import generate_dataset


def make_pair(shape, seed=0, center=(0.0, 0.0, 0.0), radii=(0.9, 0.7, 0.6)):
    """A smooth CT-like volume, a noisy biased sCT with a few out-of-range values, an
    ellipsoid mask."""
    rng = np.random.default_rng(seed)
    ct = gaussian_filter(rng.normal(0.0, 600.0, shape), 1.5) * 4.0 + rng.normal(0, 20, shape)
    sct = ct + gaussian_filter(rng.normal(0.0, 80.0, shape), 1.0) + 25.0
    sct.flat[:: max(1, sct.size // 7)] = 3500.0  # above every clipping range
    ct.flat[5 :: max(1, ct.size // 5)] = -2000.0  # below it
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = sum(((g - c) / rad) ** 2 for g, c, rad in zip(grids, center, radii, strict=True))
    return ct, sct, r < 1.0


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    generate_dataset(out, "brain", 2, seed=3)
    generate_dataset(out, "pelvis", 1, seed=3)
    return out


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    # The CI/dev machines are small and shared: torch's intra-op threads waiting on each
    # other cost far more than they gain on these tiny volumes.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
