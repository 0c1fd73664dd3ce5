from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from evaluator.errors import EvaluationInputError
from evaluator.io import Volume, check_pair, read_volume, write_volume

DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def vol(tmp_path, name, array=None, **geometry):
    array = np.zeros((4, 5, 6), np.float32) if array is None else array
    path = write_volume(tmp_path / name, array, **geometry)
    return read_volume(path)


@pytest.mark.parametrize("suffix", [".mha", ".nii.gz", ".nii"])
def test_roundtrip_keeps_array_and_geometry(tmp_path, suffix):
    a = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    v = vol(tmp_path, f"x{suffix}", a, spacing=(0.5, 0.75, 2.5), origin=(1.0, -2.0, 3.5),
            direction=DIRECTION)
    np.testing.assert_array_equal(v.array, a)
    assert v.array.dtype == np.int16
    assert v.spacing == pytest.approx((0.5, 0.75, 2.5))
    assert v.origin == pytest.approx((1.0, -2.0, 3.5))
    assert v.direction == pytest.approx(DIRECTION)
    assert v.size == (6, 5, 4)
    assert v.path == tmp_path / f"x{suffix}"


def test_spacing_mismatch_message_names_both_values_and_the_file(tmp_path):
    ct = vol(tmp_path, "ct.mha", spacing=(1.0, 1.0, 3.0))
    sct = vol(tmp_path, "sct.mha", spacing=(1.0, 1.0, 2.5))
    with pytest.raises(EvaluationInputError) as err:
        check_pair(ct, sct)
    msg = str(err.value)
    assert "sCT spacing (1.0, 1.0, 2.5) differs from CT spacing (1.0, 1.0, 3.0)" in msg
    assert str(tmp_path / "sct.mha") in msg


def test_small_float_differences_are_tolerated(tmp_path):
    ct = vol(tmp_path, "ct.mha", spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0))
    sct = vol(tmp_path, "sct.mha", spacing=(1.0000001, 1.0, 3.0), origin=(1e-5, 0.0, 0.0))
    check_pair(ct, sct)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"array": np.zeros((4, 5, 7), np.float32)},
         "sCT size (7, 5, 4) differs from CT size (6, 5, 4)"),
        ({"origin": (0.0, 0.0, 1.0)}, "sCT origin (0.0, 0.0, 1.0) differs from CT origin"),
        ({"direction": DIRECTION}, "sCT direction"),
    ],
)
def test_geometry_mismatches(tmp_path, kwargs, message):
    ct = vol(tmp_path, "ct.mha")
    sct = vol(tmp_path, "sct.mha", **kwargs)
    with pytest.raises(EvaluationInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_pair(ct, sct)


def test_non_finite_sct(tmp_path):
    a = np.zeros((4, 5, 6), np.float32)
    a[1, 2, 3] = np.nan
    a[0, 0, 0] = np.inf
    ct, sct = vol(tmp_path, "ct.mha"), vol(tmp_path, "sct.mha", a)
    with pytest.raises(EvaluationInputError, match=r"sCT contains 2 non-finite"):
        check_pair(ct, sct)


def test_finite_values_whose_sum_overflows_pass(tmp_path):
    # the check sums the volume first: an overflowing sum must not count as non-finite
    a = np.full((4, 5, 6), 3e38, np.float32)
    a[2] = -3e38
    ct, sct = vol(tmp_path, "ct.mha"), vol(tmp_path, "sct.mha", a)
    check_pair(ct, sct)
    a[3, 1, 1] = np.nan
    with pytest.raises(EvaluationInputError, match=r"sCT contains 1 non-finite"):
        check_pair(ct, vol(tmp_path, "sct2.mha", a))


def test_empty_and_mismatched_mask(tmp_path):
    ct, sct = vol(tmp_path, "ct.mha"), vol(tmp_path, "sct.mha")
    empty = vol(tmp_path, "mask.mha", np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(EvaluationInputError, match=r"mask is empty .*mask.mha"):
        check_pair(ct, sct, empty)
    shifted = vol(tmp_path, "mask2.mha", np.ones((4, 5, 6), np.uint8), spacing=(2.0, 1.0, 1.0))
    with pytest.raises(EvaluationInputError, match="mask spacing"):
        check_pair(ct, sct, shifted)
    check_pair(ct, sct, vol(tmp_path, "mask3.mha", np.ones((4, 5, 6), np.uint8)))


def test_read_errors(tmp_path):
    with pytest.raises(EvaluationInputError, match="file not found"):
        read_volume(tmp_path / "missing.mha")
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(EvaluationInputError, match="unsupported file type"):
        read_volume(tmp_path / "x.png")
    (tmp_path / "broken.mha").write_bytes(b"not an image at all")
    with pytest.raises(EvaluationInputError, match=r"broken.mha: cannot be read"):
        read_volume(tmp_path / "broken.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.float32)), str(tmp_path / "2d.mha"))
    with pytest.raises(EvaluationInputError, match="expected a 3-D image"):
        read_volume(tmp_path / "2d.mha")


def test_volume_defaults():
    v = Volume(np.zeros((2, 3, 4)))
    assert v.size == (4, 3, 2)
    assert v.name == "<in-memory volume>"
