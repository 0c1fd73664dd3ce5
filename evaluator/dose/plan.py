"""Treatment plans: a small JSON file per case and modality, validated on load.

A plan names its CT and structure map relative to the plan file, so a case directory is
self-describing (``plan_photon.json`` / ``plan_proton.json`` next to ``ct.mha`` and the
label map).  Beam weights are optimised once on the real CT and stored per engine, because
each engine has its own beamlet layout; every sCT is recomputed with exactly those weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Modality = Literal["photon", "proton"]
MODALITIES: tuple[Modality, ...] = ("photon", "proton")
PLAN_FILE = {"photon": "plan_photon.json", "proton": "plan_proton.json"}
PLAN_FORMAT_VERSION = 1


class PlanError(ValueError):
    """A plan file is missing, malformed, or references something that is not there."""


# the dose grid the engines compute on (then interpolated to the CT grid): finer than 0.5 mm
# only costs memory, coarser than 10 mm cannot resolve a dose fall-off
MIN_DOSE_GRID_MM = 0.5
MAX_DOSE_GRID_MM = 10.0


@dataclass(frozen=True)
class Beam:
    gantry_deg: float
    couch_deg: float = 0.0


@dataclass
class Plan:
    """One treatment plan.

    Coordinates: ``isocenter_mm`` is (x, y, z) in mm measured from the centre of the first
    voxel of the CT along the image axes (origin and direction of the file are ignored);
    ``None`` means the target's centre of mass.  Structure labels are integer values in the
    structure map; a voxel belongs to a structure if its label equals the structure's value.
    """

    modality: Modality
    prescription_gy: float
    target: str
    structures: dict[str, int]
    beams: list[Beam]
    oars: list[str] = field(default_factory=list)
    isocenter_mm: tuple[float, float, float] | None = None
    bixel_width_mm: float = 5.0
    dose_grid_mm: float = 3.0
    fractions: int = 1
    ct_file: str = "ct.mha"
    structure_file: str = "labels.mha"
    # engine name -> flat beamlet weights optimised on the real CT
    weights: dict[str, list[float]] = field(default_factory=dict)
    # optional explicit beamlets, one entry per beam (``u_mm``, ``v_mm``: isocentre-plane
    # positions on the bixel lattice; protons also ``range_mm``, water-equivalent range in
    # our depth-dose model, and ``energy_mev``, the machine energy it came from).  With them
    # the torch_pb engine recomputes exactly these beamlets, weights["torch_pb"] listing one
    # weight per beamlet in this order: a plan steered and optimised by another planning
    # system (e.g. pyRadPlan) is recomputed as planned.
    beamlets: list[dict[str, list[float]]] | None = None
    beamlet_source: str | None = None  # who steered the beamlets (provenance, free text)
    version: int = PLAN_FORMAT_VERSION

    def __post_init__(self) -> None:
        validate_plan(self)

    def mask(self, labels: np.ndarray, name: str) -> np.ndarray:
        """Boolean mask of structure ``name``; a clear error if it is absent from the map."""
        if name not in self.structures:
            raise PlanError(f"structure {name!r} is not defined in the plan's structures")
        mask: np.ndarray = np.asarray(labels) == self.structures[name]
        if not mask.any():
            raise PlanError(
                f"structure {name!r} (label {self.structures[name]}) is empty in the "
                "structure map; fix the label map or the plan"
            )
        return mask

    def check_structures(self, labels: np.ndarray) -> None:
        """Raise PlanError if the target or an OAR is missing from ``labels``."""
        for name in [self.target, *self.oars]:
            self.mask(labels, name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["beams"] = [asdict(b) for b in self.beams]
        data["isocenter_mm"] = None if self.isocenter_mm is None else list(self.isocenter_mm)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        if not isinstance(data, dict):
            raise PlanError("plan must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise PlanError(f"unknown plan field(s): {sorted(unknown)}")
        required = {"modality", "prescription_gy", "target", "structures", "beams"}
        missing = required - set(data)
        if missing:
            raise PlanError(f"plan lacks required field(s): {sorted(missing)}")
        kwargs = dict(data)
        try:
            kwargs["beams"] = [
                Beam(float(b["gantry_deg"]), float(b.get("couch_deg", 0.0))) for b in data["beams"]
            ]
            if data.get("isocenter_mm") is not None:
                iso = [float(v) for v in data["isocenter_mm"]]
                if len(iso) != 3:
                    raise PlanError("isocenter_mm must have three values (x, y, z)")
                kwargs["isocenter_mm"] = (iso[0], iso[1], iso[2])
            kwargs["structures"] = {str(k): int(v) for k, v in data["structures"].items()}
            kwargs["weights"] = {
                str(k): [float(x) for x in v] for k, v in data.get("weights", {}).items()
            }
            kwargs["oars"] = [str(o) for o in data.get("oars", [])]
            if data.get("beamlets") is not None:
                kwargs["beamlets"] = [
                    {str(k): [float(x) for x in v] for k, v in beam.items()}
                    for beam in data["beamlets"]
                ]
        except (TypeError, KeyError, AttributeError) as exc:
            raise PlanError(f"malformed plan field: {exc}") from exc
        return cls(**kwargs)


def validate_plan(plan: Plan) -> None:
    if plan.modality not in MODALITIES:
        raise PlanError(f"modality must be one of {MODALITIES}, not {plan.modality!r}")
    if not (math.isfinite(plan.prescription_gy) and plan.prescription_gy > 0):
        raise PlanError("prescription_gy must be a positive number")
    if not plan.beams:
        raise PlanError("a plan needs at least one beam")
    if plan.target not in plan.structures:
        raise PlanError(f"target {plan.target!r} is not among the structures {plan.structures}")
    for oar in plan.oars:
        if oar not in plan.structures:
            raise PlanError(f"organ at risk {oar!r} is not among the structures")
    if plan.target in plan.oars:
        raise PlanError("the target cannot also be an organ at risk")
    if plan.bixel_width_mm <= 0 or plan.fractions < 1:
        raise PlanError("bixel_width_mm must be > 0 and fractions >= 1")
    if not MIN_DOSE_GRID_MM <= plan.dose_grid_mm <= MAX_DOSE_GRID_MM:
        raise PlanError(f"dose_grid_mm must be between {MIN_DOSE_GRID_MM} and "
                        f"{MAX_DOSE_GRID_MM} mm (got {plan.dose_grid_mm})")
    if plan.beamlets is not None:
        _validate_beamlets(plan)
    if plan.version != PLAN_FORMAT_VERSION:
        raise PlanError(f"unsupported plan version {plan.version}")


BEAMLET_KEYS = {"photon": {"u_mm", "v_mm"}, "proton": {"u_mm", "v_mm", "range_mm"}}
BEAMLET_OPTIONAL_KEYS = {"energy_mev"}
# beamlet positions must sit on the lattice of bixel_width_mm through the isocentre
LATTICE_TOLERANCE = 1e-3


def _validate_beamlets(plan: Plan) -> None:
    assert plan.beamlets is not None
    if len(plan.beamlets) != len(plan.beams):
        raise PlanError(f"beamlets lists {len(plan.beamlets)} beam(s) but the plan has "
                        f"{len(plan.beams)}")
    need = BEAMLET_KEYS[plan.modality]
    for n, beam in enumerate(plan.beamlets):
        where = f"beamlets[{n}]"
        if not isinstance(beam, dict):
            raise PlanError(f"{where} must be an object with {sorted(need)}")
        missing, unknown = need - set(beam), set(beam) - need - BEAMLET_OPTIONAL_KEYS
        if missing or unknown:
            raise PlanError(f"{where}: needs {sorted(need)} (optional "
                            f"{sorted(BEAMLET_OPTIONAL_KEYS)}); missing {sorted(missing)}, "
                            f"unknown {sorted(unknown)}")
        lengths = {k: len(v) for k, v in beam.items()}
        if len(set(lengths.values())) != 1 or not lengths["u_mm"]:
            raise PlanError(f"{where}: all lists need the same, non-zero length (got {lengths})")
        values = np.array([beam[k] for k in sorted(beam)], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise PlanError(f"{where}: values must be finite numbers")
        cells = np.stack([beam["u_mm"], beam["v_mm"]]) / plan.bixel_width_mm
        if np.abs(cells - np.round(cells)).max() > LATTICE_TOLERANCE:
            raise PlanError(f"{where}: beamlet positions must lie on the {plan.bixel_width_mm} "
                            "mm bixel lattice through the isocentre")
        keys = np.round(cells).astype(np.int64)
        if plan.modality == "proton":
            if min(beam["range_mm"]) <= 0:
                raise PlanError(f"{where}: range_mm must be positive")
            ident = {(int(u), int(v), round(r, 3))
                     for u, v, r in zip(keys[0], keys[1], beam["range_mm"], strict=True)}
        else:
            ident = {(int(u), int(v), 0.0) for u, v in zip(keys[0], keys[1], strict=True)}
        if len(ident) != lengths["u_mm"]:
            raise PlanError(f"{where}: the same beamlet is listed twice")


def beamlet_count(plan: Plan) -> int:
    return sum(len(b["u_mm"]) for b in plan.beamlets or [])


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PlanError(f"plan file {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise PlanError(f"plan file {path} is not valid JSON: {exc}") from exc
    try:
        return Plan.from_dict(data)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from exc


def save_plan(plan: Plan, path: str | Path) -> None:
    Path(path).write_text(json.dumps(plan.to_dict(), indent=1))
