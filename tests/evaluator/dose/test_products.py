"""The viewer's dose products: block means over the whole field of view, exact gamma codes,
DVH points as the DVH metric defines them, and the same metrics with or without products."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluator import dose_products as dp
from evaluator.dose import dose_metrics_report

from .test_case import write_sct


def test_blocks_cover_the_axis_and_average_exactly() -> None:
    starts = dp.bin_starts(10, 1.0)  # 10 mm at 3 mm blocks: 4 blocks
    assert starts.tolist() == [0, 2, 5, 7]
    assert dp.bin_starts(300, 1.0).size == 100 and dp.bin_starts(600, 1.0).size == dp.MAX_BINS
    assert dp.bin_starts(5, 4.0).tolist() == [0, 1, 2, 3, 4]  # never finer than the voxels
    a = np.arange(10 * 3 * 2, dtype=np.float32).reshape(10, 3, 2)
    s = [starts, np.array([0]), np.array([0, 1])]
    mean = dp.block_mean(a, s)
    assert mean.shape == (4, 1, 2)
    assert mean[1, 0, 1] == pytest.approx(a[2:5, :, 1].mean())
    assert mean[3, 0, 0] == pytest.approx(a[7:, :, 0].mean())
    assert [dp.coarse_index(starts.tolist(), i) for i in (0, 1, 2, 6, 9)] == [0, 0, 1, 2, 3]


def test_gamma_codes_keep_any_failure_of_a_block() -> None:
    g = np.array([[[np.nan, 0.5, 1.0, 1.5]]])
    codes = dp.gamma_codes(g)
    assert codes.tolist() == [[[dp.GAMMA_NONE, dp.GAMMA_PASS, dp.GAMMA_PASS, dp.GAMMA_FAIL]]]
    worst = dp._reduce(codes, [np.array([0]), np.array([0]), np.array([0, 2])], np.maximum)
    assert worst.tolist() == [[[dp.GAMMA_PASS, dp.GAMMA_FAIL]]]


def test_cumulative_dvh() -> None:
    dose = np.array([0.0, 1.0, 1.0, 2.0])
    assert dp.cumulative_dvh(dose, np.array([0.0, 0.5, 1.0, 2.0, 2.5])) == [
        100.0, 75.0, 75.0, 25.0, 0.0]


def test_products_match_the_metrics(case_dir: Path, tmp_path: Path) -> None:
    sct = write_sct(case_dir, 40.0)
    plain = dose_metrics_report(case_dir, sct)
    with_products = dose_metrics_report(case_dir, sct, products=True)
    assert plain.products is None and with_products.metrics == plain.metrics
    products = with_products.products
    assert products is not None and set(products.modalities) == {"photon", "proton"}
    photon = products.modalities["photon"]
    target = next(s for s in photon.meta["dvh"] if s["role"] == "target")
    assert target["name"] == "PTV" and target["in_metric"]
    assert photon.meta["gamma"]["pass_rate_pct"] == pytest.approx(plain.metrics["gamma_photon"])
    # D98 of the sCT dose in the target lies on the stored curve at 98 % volume.
    levels = np.asarray(photon.meta["dose_levels_gy"])
    d98 = target["points"]["sct"]["D98"]
    assert np.interp(d98, levels, target["sct"]) == pytest.approx(98.0, abs=3.0)
    assert 0 < target["points"]["ct"]["V95"] <= 100
    # The difference is sCT − CT in % of Rx, as stored; the doses in Gy.
    diff = photon.arrays["dose_diff"].astype(np.float32)
    rx = photon.meta["rx_gy"]
    manual = (photon.arrays["dose_sct"].astype(np.float32)
              - photon.arrays["dose_ct"].astype(np.float32)) / rx * 100
    assert np.abs(diff - manual).max() < 0.5
    prediction = tmp_path / "pred" / "1BA001.mha"
    dp.write(prediction, "1BA001", products)
    npz, meta_path = dp.paths(prediction, "1BA001")
    meta = dp.read_meta(meta_path)
    assert meta is not None and meta["engine"] == "torch_pb"
    assert dp.read_arrays(npz)["proton/gamma"].dtype == np.uint8
    assert not list(npz.parent.glob(".*.tmp"))  # written atomically
    meta_path.write_text('{"version": 0}')
    assert dp.read_meta(meta_path) is None  # an older format is not misread



def test_a_failing_view_build_keeps_the_dose_metrics(case_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The views are extras. A fault inside building them (mocked: e.g. memory exhausted while
    reducing a realistic-size dose, which cannot be caused on a small case) loses only the views
    of that modality, never the case's dose metrics."""
    import evaluator.dose as dose

    sct = write_sct(case_dir, 40.0)
    plain = dose_metrics_report(case_dir, sct)
    real = dose.build_products
    assert dose.MODALITIES == ("photon", "proton")  # built in this order
    calls: list[int] = []

    def failing_for_protons(*args: object, **kwargs: object) -> dp.ModalityProducts:
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("no memory for the views")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dose, "build_products", failing_for_protons)
    report = dose_metrics_report(case_dir, sct, products=True)
    assert report.metrics == plain.metrics
    assert report.products is not None and set(report.products.modalities) == {"photon"}
