"""Dose views of a scored case: colour washes over the CT, the dose difference, the gamma
map (PNG slices) and the DVH plot (inline SVG), read from the products the worker stored
(``evaluator.dose_products``) — nothing is computed from the volumes on view.

Who may see which view is decided by ``backend.access.submission_view`` (``view.dose``,
``view.ground_truth``); this module only reads and draws.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from markupsafe import Markup

from backend.errors import BadRequestError, NotFoundError
from backend.submissions.dose import arrays_of, meta_of, modality_meta
from backend.web.plots import nice_ticks, tick_labels
from backend.web.slices import (
    CT_WINDOW,
    Axis,
    encode_png,
    load_volume,
    stretch_rows,
    take_slice,
    to_gray,
)
from evaluator import dose_products

MODALITIES = ("photon", "proton")
TITLES = {
    "dose_ct": "Dose on CT",
    "dose_sct": "Dose on sCT",
    "dose_diff": "Dose sCT − CT (% of Rx)",
    "gamma": "Gamma pass / fail",
}
WASH_FROM = 0.1  # × Rx: lower doses are not washed (the image stays readable)
WASH_TO = 1.1
WASH_ALPHA = 0.5
DIFF_LIMIT_PCT = 5.0  # ± % of Rx at full colour
# A "jet"-like ramp: blue (low) – cyan – green – yellow – red (≥ WASH_TO × Rx).
_RAMP = np.array([[0, 0, 200], [0, 200, 255], [0, 200, 0], [255, 230, 0], [230, 0, 0]],
                 np.float32)
GAMMA_COLOURS = {dose_products.GAMMA_PASS: (0, 190, 60), dose_products.GAMMA_FAIL: (230, 20, 20)}

def _upsample(coarse: npt.NDArray[Any], starts: list[list[int]], shape: list[int], axis: Axis,
              index: int) -> npt.NDArray[np.float32]:
    """The coarse block values on the full grid's slice ``index`` (nearest block), oriented
    like ``slices.take_slice`` (superior up for coronal/sagittal)."""
    full = [np.searchsorted(np.asarray(s), np.arange(n), side="right") - 1
            for s, n in zip(starts, shape, strict=True)]
    z, y, x = full
    a = coarse.astype(np.float32)
    if axis is Axis.AXIAL:
        out = a[z[index]][np.ix_(y, x)]
    elif axis is Axis.CORONAL:
        out = a[:, y[index], :][np.ix_(z, x)][::-1]
    else:
        out = a[:, :, x[index]][np.ix_(z, y)][::-1]
    result: npt.NDArray[np.float32] = np.ascontiguousarray(out)
    return result


def _ramp(t: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    pos = np.clip(t, 0.0, 1.0) * (len(_RAMP) - 1)
    stops = np.arange(len(_RAMP))
    channels = [np.interp(pos, stops, _RAMP[:, c]) for c in range(3)]
    ramp: npt.NDArray[np.float32] = np.stack(channels, axis=-1).astype(np.float32)
    return ramp


def colourise(kind: str, values: npt.NDArray[np.float32], rx: float,
              ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(RGB colour, alpha) of a dose view's values."""
    if kind in ("dose_ct", "dose_sct"):
        rel = values / rx
        colour = _ramp((rel - WASH_FROM) / (WASH_TO - WASH_FROM))
        alpha = np.where(rel >= WASH_FROM, WASH_ALPHA, 0.0).astype(np.float32)
        return colour, alpha
    if kind == "dose_diff":
        t = np.clip(values / DIFF_LIMIT_PCT, -1.0, 1.0)
        pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
        # Blue: the sCT gives less dose; red: more. Zero leaves the CT as it is.
        colour = np.stack([255.0 * (1 - neg), 255.0 * (1 - np.maximum(pos, neg)),
                           255.0 * (1 - pos)], axis=-1).astype(np.float32)
        return colour, (0.85 * np.abs(t)).astype(np.float32)
    colour = np.zeros((*values.shape, 3), np.float32)
    alpha = np.zeros(values.shape, np.float32)
    for code, rgb in GAMMA_COLOURS.items():
        hit = values == code
        colour[hit] = rgb
        alpha[hit] = 0.55
    return colour, alpha


def render(kind: str, modality: str, axis: Axis, index: int, *, prediction: str,
           case_name: str, background: Path) -> bytes:
    """PNG of one dose view's slice over ``background`` (the CT, or the sCT); ``prediction``
    is the sCT's storage key (its dose products are stored beside it)."""
    meta = modality_meta(meta_of(prediction, case_name), modality)
    arrays = arrays_of(prediction, case_name)
    coarse = arrays.get(f"{modality}/{kind}")
    if coarse is None:
        raise NotFoundError(f"This case has no {TITLES[kind].lower()} for {modality}s.")
    vol = load_volume(background)
    if list(vol.array.shape) != meta["shape"]:
        raise BadRequestError("The stored dose does not fit this image's grid; re-evaluate the "
                              "submission to compute it again.")
    base, aspect = take_slice(vol, axis, index)  # also checks the index
    gray = to_gray(base, *CT_WINDOW).astype(np.float32)[..., None].repeat(3, axis=-1)
    colour, alpha = colourise(kind, _upsample(coarse, meta["starts"], meta["shape"], axis, index),
                              float(meta["rx_gy"]))
    mixed = gray * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    pixels = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return encode_png(stretch_rows(pixels, aspect))


_COLOURS = ("#c0392b", "#1f6fb2", "#2e8b57", "#8e44ad", "#d35400", "#16a085", "#7f8c8d")
POINT_ORDER = ("D98", "V95", "D2", "Dmean")


def _point_xy(name: str, value: float, rx: float, levels: list[float],
              curve: list[float]) -> tuple[float, float]:
    """Where a DVH metric's point sits: Dx at x % volume; V95 at 95 % of Rx; Dmean on the
    curve at that dose."""
    if name == "V95":
        return 0.95 * rx, value
    if name == "Dmean":
        return value, float(np.interp(value, levels, curve))
    return value, float(name[1:])


def dvh_plot(data: dict[str, Any], modality: str) -> Markup:
    """The DVH plot (CT solid, sCT dashed; metric points marked) and its points table."""
    m = data.get(modality)
    if m is None:
        raise NotFoundError(f"This case has no {modality} dose.")
    levels: list[float] = m["dose_levels_gy"]
    rx = float(m["rx_gy"])
    width, height, left, right, top, bottom = 640, 340, 52, 620, 16, 290
    x_max = levels[-1] or 1.0

    def sx(v: float) -> float:
        return left + (right - left) * min(max(v / x_max, 0.0), 1.0)

    def sy(v: float) -> float:
        return bottom - (bottom - top) * min(max(v / 100.0, 0.0), 1.0)

    title = f"DVH, {modality}: CT dose solid, sCT dose dashed; points of the DVH metric marked"
    parts = [f'<svg class="plot dvh" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" data-modality="{escape(modality)}">']
    xt = nice_ticks(0.0, x_max)
    for t, label in zip(xt, tick_labels(xt), strict=True):
        if t <= x_max:
            parts.append(f'<line class="grid" x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top}" '
                         f'y2="{bottom}"/><text x="{sx(t):.1f}" y="{bottom + 16}" '
                         f'text-anchor="middle">{label}</text>')
    for v in range(0, 101, 20):
        parts.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{sy(v):.1f}" '
                     f'y2="{sy(v):.1f}"/><text x="{left - 6}" y="{sy(v) + 4:.1f}" '
                     f'text-anchor="end">{v}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>'
                 f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/>'
                 f'<line class="rx" x1="{sx(rx):.1f}" x2="{sx(rx):.1f}" y1="{top}" '
                 f'y2="{bottom}"><title>Rx {rx:g} Gy</title></line>'
                 f'<text x="{(left + right) / 2}" y="{bottom + 34}" text-anchor="middle">'
                 f'Dose (Gy)</text><text x="14" y="{(top + bottom) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {(top + bottom) / 2})">Volume (%)</text>')
    rows = []
    for i, s in enumerate(m["structures"]):
        colour = _COLOURS[i % len(_COLOURS)]
        name = escape(s["name"])
        for source in ("ct", "sct"):
            curve = s.get(source)
            if curve is None:
                continue
            path = " ".join(f"{'M' if j == 0 else 'L'}{sx(d):.1f},{sy(v):.1f}"
                            for j, (d, v) in enumerate(zip(levels, curve, strict=True)))
            dash = ' stroke-dasharray="6 4"' if source == "sct" else ""
            parts.append(f'<path class="dvh-curve" data-structure="{name}" '
                         f'data-source="{source}" d="{path}" fill="none" stroke="{colour}" '
                         f'stroke-width="2"{dash}><title>{name} ({source.upper()} dose)</title>'
                         '</path>')
            for point in POINT_ORDER:
                value = s["points"][source].get(point)
                if value is None:
                    continue
                px, py = _point_xy(point, value, rx, levels, curve)
                unit = "%" if point == "V95" else " Gy"
                shape = (f'<circle cx="{sx(px):.1f}" cy="{sy(py):.1f}" r="4.5"'
                         if source == "ct" else
                         f'<rect x="{sx(px) - 4:.1f}" y="{sy(py) - 4:.1f}" width="8" height="8"')
                parts.append(f'{shape} class="dvh-point" data-point="{point}" '
                             f'data-source="{source}" data-structure="{name}" '
                             f'fill="{colour}" stroke="#fff"><title>{name} {point} '
                             f'({source.upper()}): {value:.4g}{unit}</title>'
                             f'{"</circle>" if source == "ct" else "</rect>"}')
        ct_points, sct_points = s["points"].get("ct", {}), s["points"]["sct"]
        cells = "".join(
            f"<td>{_pair(ct_points.get(p), sct_points.get(p), 'ct' in s['points'])}</td>"
            for p in POINT_ORDER)
        role = "target" if s["role"] == "target" else "OAR"
        used = " (in metric)" if s["in_metric"] else ""
        rows.append(f'<tr><th scope="row"><span class="swatch" style="background:{colour}">'
                    f'</span>{name}</th><td>{role}{used}</td>{cells}</tr>')
    parts.append("</svg>")
    head = "".join(f"<th>{p}{' (%)' if p == 'V95' else ' (Gy)'}</th>" for p in POINT_ORDER)
    table = (f'<table class="dvh-points"><thead><tr><th>Structure</th><th>Role</th>{head}'
             f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    note = ("solid lines and ● the dose on the CT, dashed lines and ■ on the sCT; "
            "table: CT → sCT" if any("ct" in s for s in m["structures"])
            else "dashed lines and ■ the dose on the sCT only (the reference CT's dose is not "
            "shown in this phase)")
    # Every name and number above is escaped or formatted by us.
    return Markup(f'{"".join(parts)}<p class="muted small dvh-note">{note}. '  # noqa: S704
                  f'Rx {rx:g} Gy.</p>{table}')


def _pair(ct: float | None, sct: float | None, with_ct: bool) -> str:
    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3g}"

    return f"{f(ct)} → {f(sct)}" if with_ct else f(sct)
