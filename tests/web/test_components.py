"""Pure parts of the web app: SVG plots, PNG slices, rank stability, form parsing, status."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 - the usual alias

from backend.errors import BadRequestError, NotFoundError
from backend.leaderboards.ranking import Column
from backend.leaderboards.stability import rank_intervals
from backend.models import RankingMethod, Submission, SubmissionStatus
from backend.web import forms
from backend.web.plots import (
    TeamValue,
    comparison_plot,
    distribution_plot,
    nice_ticks,
    rank_interval,
)
from backend.web.slices import Axis, SliceKind, encode_png, render_slice
from backend.web.status import hint_for, status_view


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            header = body
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, _, color_type = struct.unpack(">IIBB", header[:10])
    return w, h, color_type, zlib.decompress(idat)


def test_png_encoder_round_trips_gray_and_rgb() -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    w, h, ct, raw = decode_png(encode_png(gray))
    assert (w, h, ct) == (4, 3, 0)
    assert raw == b"".join(b"\x00" + gray[r].tobytes() for r in range(3))
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    w, h, ct, raw = decode_png(encode_png(rgb))
    assert (w, h, ct) == (2, 2, 2)
    assert raw[1:4] == b"\xff\x00\x00"


def _write(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> Path:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def test_slices_of_each_kind_and_axis(tmp_path: Path) -> None:
    ct = np.full((4, 6, 8), -1000.0, np.float32)
    ct[:, 2:4, 2:6] = 40.0
    sct = ct.copy()
    sct[:, 2:4, 2:6] = 140.0  # 100 HU too high
    mr = np.random.default_rng(0).random((4, 6, 8)).astype(np.float32)
    paths = {
        "input_path": _write(tmp_path / "mr.mha", mr, (1, 1, 2.5)),
        "sct_path": _write(tmp_path / "sct.mha", sct, (1, 1, 2.5)),
        "ct_path": _write(tmp_path / "ct.mha", ct, (1, 1, 2.5)),
    }
    w, h, ct_type, _ = decode_png(render_slice(SliceKind.CT, Axis.AXIAL, 1, **paths))
    assert (w, h, ct_type) == (8, 6, 0)
    # Coronal: z rows stretched by the 2.5 mm slice spacing.
    w, h, _, _ = decode_png(render_slice(SliceKind.INPUT, Axis.CORONAL, 3, **paths))
    assert (w, h) == (8, 10)
    w, h, ct_type, raw = decode_png(render_slice(SliceKind.DIFF, Axis.SAGITTAL, 3, **paths))
    assert ct_type == 2 and w == 6
    pixels = np.frombuffer(raw, np.uint8).reshape(h, 1 + w * 3)[:, 1:].reshape(h, w, 3)
    assert pixels[0, 3, 0] == 255 and pixels[0, 3, 2] < 255  # sCT too high -> red
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # no difference -> white
    with pytest.raises(BadRequestError):
        render_slice(SliceKind.CT, Axis.AXIAL, 4, **paths)
    with pytest.raises(NotFoundError):
        render_slice(SliceKind.SCT, Axis.AXIAL, 0, input_path=paths["input_path"])


def test_plots_escape_names_and_mark_own_rows() -> None:
    svg = distribution_plot([("case<1>", 10.0), ("b", 20.0), ("c", None)], metric_label="MAE",
                            unit="HU", higher_is_better=False)
    assert "<svg" in svg and "case&lt;1&gt;" in svg and "2 cases" in svg
    svg = comparison_plot(
        [TeamValue("alice", 50.0, own=True), TeamValue("<b>", 40.0),
         TeamValue("base", 60.0, baseline=True), TeamValue("none", None)],
        metric_label="MAE", higher_is_better=False)
    assert "1. &lt;b&gt;" in svg and "2. alice (you)" in svg and "(baseline)" in svg
    assert "none" not in svg
    assert "No MAE values" in distribution_plot([], metric_label="MAE")
    assert "rank 2" in rank_interval(2, 1.0, 3.0, 4)
    assert rank_interval(None, None, None, 3) == ""
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_rank_intervals_separate_clear_and_close_teams() -> None:
    rng = np.random.default_rng(1)
    cases = range(20)
    per_case = {
        1: {c: {"mae": 50 + rng.normal()} for c in cases},  # clearly best
        2: {c: {"mae": 80 + rng.normal(0, 10)} for c in cases},  # 2 and 3 overlap
        3: {c: {"mae": 81 + rng.normal(0, 10)} for c in cases},
    }
    iv = rank_intervals(per_case, [Column("mae", False)], RankingMethod.ABSOLUTE, samples=100)
    assert iv[1] == (1.0, 1.0)
    assert iv[2][0] == 2.0 and iv[2][1] == 3.0
    assert iv[3][1] == 3.0
    assert rank_intervals({1: per_case[1]}, [Column("mae", False)],
                          RankingMethod.ABSOLUTE) == {}


def test_phase_form_parsing_reports_every_field() -> None:
    with pytest.raises(forms.FormError) as err:
        forms.phase_in({"slug": "p1", "title": "P", "kind": "validation",
                        "opens_at": "2030-01-02T00:00", "closes_at": "2030-01-01T00:00",
                        "memory_mb": "lots", "extra_columns": "psnr sideways"})
    assert set(err.value.errors) == {"closes_at", "memory_mb", "extra_columns"}
    with pytest.raises(forms.FormError) as err:
        forms.phase_in({"slug": "p1", "title": "P", "submissions_per_period": "-1"})
    assert "submissions_per_period" in err.value.errors
    phase = forms.phase_in({"slug": "p1", "title": "P", "kind": "debug", "is_open": "on",
                            "submission_period_s": "", "extra_columns": "psnr higher\nhd95",
                            "opens_at": "2030-01-01T00:00"})
    assert phase.is_open is True and phase.gpu_required is False
    assert phase.submission_period_s is None
    assert phase.extra_columns is not None and phase.extra_columns[1].higher_is_better is False
    assert phase.opens_at is not None and phase.opens_at.tzinfo is not None


def test_status_reads_like_a_person_wrote_it() -> None:
    sub = Submission(id=7, status=SubmissionStatus.RUNNING, cases_total=10, cases_done=2,
                     current_step="", error_message="")
    view = status_view(sub)
    assert view.label == "Running case 3 of 10" and view.active and 0 < view.percent < 100
    sub.status = SubmissionStatus.FAILED
    sub.error_message = "Case 1BA001: no output file written to /output/images/synthetic-ct."
    view = status_view(sub)
    assert view.label == "Failed" and not view.active and "synthetic-ct" in view.hint
    assert "USER" in hint_for("image runs as root")
