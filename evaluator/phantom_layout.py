"""Where a phantom's target (PTV) and organs at risk sit, fixed or drawn per seed.

Ellipsoids in the phantom generator's normalised coordinates ([-1, 1] along z, y, x).  The
fixed layout is the original one (every case of every seed has its target and organs in the
same place); a varied layout moves and resizes the target and organs within anatomical
bounds: the brain target anywhere in either hemisphere's brain tissue, 2-4.5 cm across; the
pelvic target (prostate-like) along the midline, the bladder's filling and the rectum's
width varying.  A target never covers an organ's centre, so every organ keeps voxels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Vec = tuple[float, float, float]


@dataclass(frozen=True)
class Ellipsoid:
    centre: Vec
    radii: Vec

    def value(self, point: Vec) -> float:
        """< 1 inside, > 1 outside."""
        return sum(((p - c) / r) ** 2 for p, c, r in zip(point, self.centre, self.radii,
                                                          strict=True))


@dataclass(frozen=True)
class Layout:
    ptv: Ellipsoid
    oars: dict[str, Ellipsoid] = field(default_factory=dict)  # label 3.. in this order
    beam_offset_deg: float = 0.0  # all beams of both plans rotated by this angle


FIXED: dict[str, Layout] = {
    "brain": Layout(
        ptv=Ellipsoid((0.05, -0.05, 0.22), (0.16, 0.16, 0.16)),
        oars={
            "brainstem": Ellipsoid((-0.35, 0.15, 0.0), (0.25, 0.10, 0.10)),
            "chiasm": Ellipsoid((-0.10, -0.25, 0.0), (0.06, 0.05, 0.10)),
            "eye_l": Ellipsoid((-0.30, -0.62, 0.25), (0.09, 0.09, 0.09)),
            "eye_r": Ellipsoid((-0.30, -0.62, -0.25), (0.09, 0.09, 0.09)),
        }),
    "pelvis": Layout(
        ptv=Ellipsoid((-0.05, 0.0, 0.0), (0.30, 0.13, 0.13)),
        oars={
            "bladder": Ellipsoid((-0.30, -0.22, 0.0), (0.45, 0.15, 0.18)),
            "rectum": Ellipsoid((0.0, 0.22, 0.0), (1.2, 0.08, 0.08)),
            "femur_l": Ellipsoid((0.0, 0.05, 0.45), (1.3, 0.16, 0.13)),
            "femur_r": Ellipsoid((0.0, 0.05, -0.45), (1.3, 0.16, 0.13)),
        }),
}
# Brain tissue (grey matter) of the phantom: head ellipsoid value < 0.72 (evaluator.phantoms)
_BRAIN = Ellipsoid((0.0, 0.0, 0.0), tuple(r * 0.72**0.5 for r in (0.85, 0.80, 0.70)))
_BRAIN_MARGIN = 0.85  # the target stays this deep inside the brain (head jitter is +-5 %)


def fixed_layout(anatomy: str) -> Layout:
    if anatomy not in FIXED:
        raise ValueError(f"unknown anatomy {anatomy!r} (expected brain or pelvis)")
    return FIXED[anatomy]


def _moved(e: Ellipsoid, rng: np.random.Generator, shift: Vec, scale: float) -> Ellipsoid:
    c = tuple(float(c + rng.uniform(-s, s)) for c, s in zip(e.centre, shift, strict=True))
    r = tuple(float(r * rng.uniform(1 - scale, 1 + scale)) for r in e.radii)
    return Ellipsoid(c, r)  # type: ignore[arg-type]


def _extremes(e: Ellipsoid) -> list[Vec]:
    out = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            p = list(e.centre)
            p[axis] += sign * e.radii[axis]
            out.append((p[0], p[1], p[2]))
    return out


def _brain_ptv(rng: np.random.Generator) -> Ellipsoid:
    side = float(rng.choice([-1.0, 1.0]))
    size = float(rng.uniform(0.10, 0.22))
    radii = tuple(float(size * rng.uniform(0.8, 1.2)) for _ in range(3))
    centre = (float(rng.uniform(-0.10, 0.35)), float(rng.uniform(-0.35, 0.30)),
              side * float(rng.uniform(0.08, 0.30)))
    return Ellipsoid(centre, radii)  # type: ignore[arg-type]


def _pelvis_ptv(rng: np.random.Generator) -> Ellipsoid:
    return _moved(FIXED["pelvis"].ptv, rng, (0.12, 0.04, 0.04), 0.25)


def varied_layout(anatomy: str, rng: np.random.Generator) -> Layout:
    """A layout drawn from ``rng``: the target and organs moved and resized within bounds."""
    base = fixed_layout(anatomy)
    if anatomy == "brain":
        oars = {n: _moved(e, rng, (0.04, 0.04, 0.03), 0.15) for n, e in base.oars.items()}
    else:
        oars = dict(base.oars)  # the femurs follow the hip bones (bone voxels only)
        oars["bladder"] = _moved(base.oars["bladder"], rng, (0.08, 0.03, 0.03), 0.3)
        r = base.oars["rectum"].radii
        w = float(rng.uniform(0.8, 1.2))
        oars["rectum"] = Ellipsoid(_moved(base.oars["rectum"], rng, (0.1, 0.03, 0.02),
                                          0.0).centre, (r[0], r[1] * w, r[2] * w))
    for _ in range(1000):
        ptv = _brain_ptv(rng) if anatomy == "brain" else _pelvis_ptv(rng)
        inside = anatomy != "brain" or all(
            _BRAIN.value(p) < _BRAIN_MARGIN for p in _extremes(ptv))
        if inside and all(ptv.value(o.centre) > 1.5 for o in oars.values()):
            break
    else:  # pragma: no cover - the bounds above leave most draws valid
        ptv = base.ptv
    return Layout(ptv=ptv, oars=oars, beam_offset_deg=float(rng.uniform(-15.0, 15.0)))
