"""Fit the own photon engine's lateral kernel model to pyRadPlan's Generic 6 MV machine.

    .venv/bin/python scripts/fit_photon_kernel.py   # needs the dose extra (pyRadPlan)

pyRadPlan (like matRad) describes a 6 MV pencil beam by three depth components
D_c(d) = b_c / (b_c - m) (exp(-m d) - exp(-b_c d)) (attenuation m, build-up b_c), each with a
tabulated radial kernel k_c(r) per SSD; a bixel's lateral profile is the kernel convolved with
the bixel square blurred by a Gaussian penumbra, and voxels farther than 50 mm from the bixel
ray get no dose (its geometric lateral cut-off).  Our engine writes each lateral profile as
a sum of Gaussian-blurred squares,

    L_c(u, v) = sum_k A_ck * S(u; b, s_k) * S(v; b, s_k),  s_k^2 = sigma_pen^2 + scale_k^2,

where S(x; b, s) is a width-b square blurred by a Gaussian of sigma s (differences of erf),
which is linear in A, separable and exact to evaluate for any beamlet weights.  This script
computes the reference profile of one 5 mm bixel numerically (0.25 mm grid, the cut-off
applied) at SSDs 500..1000 mm and fits A by linear least squares; it writes the fitted
coefficients and the machine's scalar constants to evaluator/dose/engines/photon_kernel.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import erf

OUT = Path(__file__).resolve().parents[1] / "evaluator" / "dose" / "engines" / "photon_kernel.json"
SCALES_MM = [0.0, 1.0, 2.0, 4.0, 8.0, 14.0, 22.0, 32.0, 45.0]
SSDS_MM = list(range(500, 1001, 25))
BIXEL_MM = 5.0
CUTOFF_MM = 50.0
RES = 0.25


def blurred_square(x: np.ndarray, width: float, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return np.asarray((np.abs(x) <= width / 2).astype(float))
    s = math.sqrt(2.0) * sigma
    return np.asarray(0.5 * (erf((x + width / 2) / s) - erf((x - width / 2) / s)))


def main() -> None:
    from pyRadPlan.machines import load_from_name

    machine = load_from_name("photons", "Generic")
    kern = machine.pb_kernels[6.0]
    sigma_pen = kern.penumbra / math.sqrt(8 * math.log(2))
    pos = np.asarray(kern.kernel_pos)
    half = math.ceil((CUTOFF_MM + 10) / RES)
    ax = np.arange(-half, half + 1) * RES
    xx, yy = np.meshgrid(ax, ax, indexing="ij")
    rr = np.hypot(xx, yy)
    fluence = np.outer(blurred_square(ax, BIXEL_MM, sigma_pen),
                       blurred_square(ax, BIXEL_MM, sigma_pen))
    columns = []
    for scale in SCALES_MM:
        s = math.hypot(sigma_pen, scale)
        p = blurred_square(ax, BIXEL_MM, s)
        columns.append(np.outer(p, p).ravel())
    design = np.stack(columns, axis=1)
    coefs, worst = [], 0.0
    for ssd in SSDS_MM:
        k = np.asarray(kern.get_kernels_at_ssd(float(ssd)))
        per_c = []
        for c in range(k.shape[0]):
            # the tabulated kernel is a density (1/mm^2) whose r = 0 entry stands for the
            # central 0.5 mm pixel of pyRadPlan's convolution grid: keep that pixel's integral
            kr = np.interp(rr, pos[1:], k[c][1:], right=0.0)
            kr[rr < 0.25] = 0.0
            profile = fftconvolve(fluence, kr * RES**2, mode="same")
            profile += 0.25 * k[c][0] * fluence  # the r = 0 pixel (0.5 mm)^2 as a point
            profile[rr > CUTOFF_MM] = 0.0
            a, *_ = np.linalg.lstsq(design, profile.ravel(), rcond=None)
            err = np.abs(design @ a - profile.ravel()).max() / np.abs(profile).max()
            worst = max(worst, float(err))
            per_c.append([float(v) for v in a])
        coefs.append(per_c)
    out = {
        "source": "fit to pyRadPlan 0.5.0 Generic 6 MV machine (scripts/fit_photon_kernel.py)",
        "sad_mm": float(machine.sad),
        "m_per_mm": float(kern.m),
        "betas_per_mm": [float(b) for b in kern.kernel_betas],
        "penumbra_sigma_mm": sigma_pen,
        "lateral_cutoff_mm": CUTOFF_MM,
        "fit_bixel_mm": BIXEL_MM,
        "scales_mm": SCALES_MM,
        "ssds_mm": [float(s) for s in SSDS_MM],
        "coefficients": coefs,  # [ssd][component][scale]
        "max_fit_error_rel": worst,
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}: worst profile error {100 * worst:.2f} % of the peak")


if __name__ == "__main__":
    main()
