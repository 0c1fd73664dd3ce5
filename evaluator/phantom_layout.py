"""Where a phantom's target (PTV) and organs at risk sit, fixed or drawn per seed.

Ellipsoids in the phantom generator's normalised coordinates ([-1, 1] along z, y, x; +z
superior, +y posterior, +x the patient's left).  The fixed layout is the original one (every
case of every seed has its target and organs in the same place); a varied layout moves and
resizes the target and organs within anatomical bounds: the brain target anywhere in either
hemisphere's brain tissue, 2-4.5 cm across; the pelvic target (prostate-like) along the
midline, the bladder's filling and the rectum's width varying; the head-and-neck target (a
nodal/oropharyngeal volume) on either side of the airway; the thoracic target (a lung tumour)
in either lung's upper half; the abdominal target (pancreas-like) about the midline, the
liver, kidneys and stomach moving.  Organs the anatomy is built around (spinal cord, femurs,
lungs) stay.  A target never covers an organ's centre, so every organ keeps voxels.  The
anatomy (:mod:`evaluator.phantom_anatomy`) draws the organs where the layout puts them.
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
    "head_neck": Layout(
        ptv=Ellipsoid((-0.12, -0.05, 0.2), (0.12, 0.10, 0.09)),
        oars={
            "spinal_cord": Ellipsoid((-0.45, 0.37, 0.0), (0.62, 0.035, 0.035)),
            "parotid_l": Ellipsoid((0.05, 0.0, 0.36), (0.08, 0.11, 0.07)),
            "parotid_r": Ellipsoid((0.05, 0.0, -0.36), (0.08, 0.11, 0.07)),
        }),
    "thorax": Layout(
        ptv=Ellipsoid((0.45, -0.05, 0.4), (0.12, 0.11, 0.09)),
        oars={
            "lung_l": Ellipsoid((0.1, -0.02, 0.4), (0.85, 0.45, 0.3)),
            "lung_r": Ellipsoid((0.1, -0.02, -0.4), (0.85, 0.45, 0.32)),
            "heart": Ellipsoid((-0.25, -0.15, 0.08), (0.35, 0.28, 0.28)),
            "esophagus": Ellipsoid((0.0, 0.16, 0.03), (1.2, 0.03, 0.03)),
            "spinal_cord": Ellipsoid((0.0, 0.46, 0.0), (1.2, 0.025, 0.02)),
        }),
    "abdomen": Layout(
        ptv=Ellipsoid((0.05, 0.0, 0.05), (0.12, 0.09, 0.14)),
        oars={
            "liver": Ellipsoid((0.3, -0.05, -0.38), (0.55, 0.4, 0.38)),
            "kidney_l": Ellipsoid((-0.1, 0.25, 0.32), (0.28, 0.1, 0.09)),
            "kidney_r": Ellipsoid((-0.2, 0.25, -0.32), (0.28, 0.1, 0.09)),
            "stomach": Ellipsoid((0.45, -0.2, 0.3), (0.25, 0.2, 0.2)),
            "spinal_cord": Ellipsoid((0.0, 0.47, 0.0), (1.2, 0.03, 0.025)),
        }),
}
# Brain tissue (grey matter) of the phantom: head ellipsoid value < 0.72 (evaluator.phantoms)
_BRAIN = Ellipsoid((0.0, 0.0, 0.0), tuple(r * 0.72**0.5 for r in (0.85, 0.80, 0.70)))
_BRAIN_MARGIN = 0.85  # the target stays this deep inside the brain (head jitter is +-5 %)


def fixed_layout(anatomy: str) -> Layout:
    if anatomy not in FIXED:
        raise ValueError(f"unknown anatomy {anatomy!r} (expected one of {', '.join(FIXED)})")
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


def _side(e: Ellipsoid, side: float) -> Ellipsoid:
    return Ellipsoid((e.centre[0], e.centre[1], side * abs(e.centre[2])), e.radii)


def _hn_ptv(rng: np.random.Generator) -> Ellipsoid:
    side = float(rng.choice([-1.0, 1.0]))
    return _side(_moved(FIXED["head_neck"].ptv, rng, (0.1, 0.05, 0.04), 0.25), side)


def _thorax_ptv(rng: np.random.Generator) -> Ellipsoid:
    side = float(rng.choice([-1.0, 1.0]))
    return _side(_moved(FIXED["thorax"].ptv, rng, (0.2, 0.12, 0.06), 0.3), side)


def _abdomen_ptv(rng: np.random.Generator) -> Ellipsoid:
    return _moved(FIXED["abdomen"].ptv, rng, (0.1, 0.04, 0.06), 0.25)


_PTV = {"brain": _brain_ptv, "pelvis": _pelvis_ptv, "head_neck": _hn_ptv,
        "thorax": _thorax_ptv, "abdomen": _abdomen_ptv}
# Organs that move in a varied layout: (shift per axis, relative resize)
_MOVES: dict[str, dict[str, tuple[Vec, float]]] = {
    "head_neck": {"parotid_l": ((0.03, 0.03, 0.02), 0.2),
                  "parotid_r": ((0.03, 0.03, 0.02), 0.2)},
    "thorax": {"heart": ((0.05, 0.03, 0.04), 0.12), "lung_l": ((0.03, 0.0, 0.0), 0.05),
               "lung_r": ((0.03, 0.0, 0.0), 0.05)},
    "abdomen": {"liver": ((0.08, 0.03, 0.03), 0.1), "kidney_l": ((0.1, 0.02, 0.03), 0.15),
                "kidney_r": ((0.1, 0.02, 0.03), 0.15), "stomach": ((0.08, 0.05, 0.05), 0.2)},
}


def _ptv_inside(anatomy: str, ptv: Ellipsoid, oars: dict[str, Ellipsoid]) -> bool:
    """Whether a drawn target lies where that region's target belongs."""
    if anatomy == "brain":
        return all(_BRAIN.value(p) < _BRAIN_MARGIN for p in _extremes(ptv))
    if anatomy == "thorax":  # inside its lung, clear of the heart
        lung = oars["lung_l" if ptv.centre[2] > 0 else "lung_r"]
        return (all(lung.value(p) < 0.8 for p in _extremes(ptv))
                and all(oars["heart"].value(p) > 1.0 for p in _extremes(ptv)))
    return True


def varied_layout(anatomy: str, rng: np.random.Generator) -> Layout:
    """A layout drawn from ``rng``: the target and organs moved and resized within bounds."""
    base = fixed_layout(anatomy)
    if anatomy == "brain":
        oars = {n: _moved(e, rng, (0.04, 0.04, 0.03), 0.15) for n, e in base.oars.items()}
    elif anatomy in _MOVES:
        moves = _MOVES[anatomy]
        oars = {n: _moved(e, rng, *moves[n]) if n in moves else e for n, e in base.oars.items()}
    else:
        oars = dict(base.oars)  # the femurs follow the hip bones (bone voxels only)
        oars["bladder"] = _moved(base.oars["bladder"], rng, (0.08, 0.03, 0.03), 0.3)
        r = base.oars["rectum"].radii
        w = float(rng.uniform(0.8, 1.2))
        oars["rectum"] = Ellipsoid(_moved(base.oars["rectum"], rng, (0.1, 0.03, 0.02),
                                          0.0).centre, (r[0], r[1] * w, r[2] * w))
    for _ in range(1000):
        ptv = _PTV[anatomy](rng)
        inside = _ptv_inside(anatomy, ptv, oars)
        if inside and all(ptv.value(o.centre) > 1.5 for o in oars.values()):
            break
    else:  # pragma: no cover - the bounds above leave most draws valid
        ptv = base.ptv
    return Layout(ptv=ptv, oars=oars, beam_offset_deg=float(rng.uniform(-15.0, 15.0)))
