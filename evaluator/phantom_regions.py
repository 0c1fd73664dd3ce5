"""The phantom regions in one table: names, case ids, volume sizes, prescriptions, beams,
and the TotalSegmentator ('total' task, v2) structures each region's ``segmentation.mha`` holds.

Coordinates follow the images (LPS, identity direction): +z superior, +y posterior, +x the
patient's left. Label ids are TotalSegmentator's 'total' class ids, so a phantom's ground-truth
segmentation compares directly with what TotalSegmentator finds on a synthetic CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# TotalSegmentator v2 'total' class ids of the structures the phantoms draw.
TS: dict[str, int] = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5, "stomach": 6,
    "lung_upper_lobe_left": 10, "lung_lower_lobe_left": 11, "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13, "lung_lower_lobe_right": 14, "esophagus": 15, "trachea": 16,
    "thyroid_gland": 17, "urinary_bladder": 21, "sacrum": 25,
    **{f"vertebrae_L{n}": 32 - n for n in range(1, 6)},  # L1 31 .. L5 27
    **{f"vertebrae_T{n}": 44 - n for n in range(1, 13)},  # T1 43 .. T12 32
    **{f"vertebrae_C{n}": 51 - n for n in range(1, 8)},  # C1 50 .. C7 44
    "heart": 51, "aorta": 52, "hip_left": 77, "hip_right": 78, "spinal_cord": 79,
    "brain": 90, "skull": 91,
    **{f"rib_left_{n}": 91 + n for n in range(1, 13)},  # 92 .. 103
    **{f"rib_right_{n}": 103 + n for n in range(1, 13)},  # 104 .. 115
    "sternum": 116,
}

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Region:
    key: str  # the generator's name (CLI --region)
    name: str  # /input/region.json, as SynthRAD writes it
    code: str  # in case ids: <task><code>A<nnn>, e.g. 1HNA001 (MRI), 2THA001 (CBCT)
    folder: str  # SynthRAD2025 folder name (Task1/<folder>/<case>)
    stream: int  # this region's random stream (a seed's cases differ between regions)
    fov_mm: tuple[float, float, float]  # (z, y, x)
    shapes: dict[str, Shape]  # voxels (z, y, x) per size
    prescription_gy: float  # per fraction, to the PTV
    fractions: int  # of the course the prescription belongs to (documentation)
    photon_angles: tuple[float, ...]
    proton_angles: tuple[float, ...]
    structures: tuple[str, ...]  # TS names drawn in segmentation.mha
    # Organs at risk restricted to voxels of one threshold class (3 bone, 1 air/lung).
    oar_class: dict[str, int] = field(default_factory=dict)


_SPINE_HN = (*(f"vertebrae_C{n}" for n in range(1, 8)), "vertebrae_T1")
_SPINE_TH = tuple(f"vertebrae_T{n}" for n in range(1, 13))
_SPINE_AB = ("vertebrae_T11", "vertebrae_T12", *(f"vertebrae_L{n}" for n in range(1, 5)))
_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right",
          "lung_middle_lobe_right", "lung_lower_lobe_right")
_RIBS = tuple(f"rib_{s}_{n}" for s in ("left", "right") for n in range(1, 13))
_FIVE_ANGLES = (0.0, 72.0, 144.0, 216.0, 288.0)

REGIONS: dict[str, Region] = {r.key: r for r in (
    Region("brain", "Brain", "B", "brain", 0, (200.0, 256.0, 256.0),
           {"small": (48, 64, 64), "medium": (100, 128, 128), "realistic": (200, 256, 256)},
           2.0, 30, _FIVE_ANGLES, (60.0, 300.0), ("brain", "skull")),
    Region("pelvis", "Pelvis", "P", "pelvis", 1, (375.0, 440.0, 512.0),
           {"small": (40, 64, 80), "medium": (75, 128, 160), "realistic": (150, 512, 512)},
           2.0, 39, _FIVE_ANGLES, (90.0, 270.0),
           ("urinary_bladder", "sacrum", "hip_left", "hip_right"),
           oar_class={"femur_l": 3, "femur_r": 3}),
    Region("head_neck", "Head and Neck", "HN", "HN", 2, (250.0, 240.0, 240.0),
           {"small": (50, 64, 64), "medium": (100, 128, 128), "realistic": (200, 256, 256)},
           2.0, 35, (0.0, 51.0, 103.0, 154.0, 206.0, 257.0, 309.0), (45.0, 315.0),
           ("brain", "skull", "spinal_cord", "trachea", "esophagus", "thyroid_gland",
            *_SPINE_HN)),
    Region("thorax", "Thorax", "TH", "TH", 3, (300.0, 360.0, 480.0),
           {"small": (40, 60, 80), "medium": (75, 120, 160), "realistic": (150, 384, 512)},
           2.0, 30, _FIVE_ANGLES, (150.0, 210.0),
           ("heart", "spinal_cord", "trachea", "esophagus", "sternum", *_LOBES, *_SPINE_TH,
            *_RIBS),
           oar_class={"lung_l": 1, "lung_r": 1}),
    Region("abdomen", "Abdomen", "AB", "AB", 4, (300.0, 330.0, 440.0),
           {"small": (40, 60, 80), "medium": (75, 120, 160), "realistic": (150, 384, 512)},
           1.8, 28, _FIVE_ANGLES, (90.0, 270.0),
           ("liver", "kidney_right", "kidney_left", "spleen", "stomach", "aorta",
            "spinal_cord", *_SPINE_AB)),
)}

# SynthRAD tasks: 1 = MRI -> CT, 2 = CBCT -> CT (the digit that starts a case id).
TASKS: dict[str, int] = {"mri": 1, "cbct": 2}


def region(key: str) -> Region:
    if key not in REGIONS:
        raise ValueError(f"unknown anatomy {key!r} (expected one of {', '.join(REGIONS)})")
    return REGIONS[key]
