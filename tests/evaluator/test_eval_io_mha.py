"""The direct MetaImage reader (io.read_mha) gives exactly what SimpleITK gives, and leaves
compressed files and every file it does not fully understand to SimpleITK."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.errors import EvaluationInputError
from evaluator.io import read_mha, read_volume, read_volumes, write_volume

ROTATED = (math.cos(0.3), -math.sin(0.3), 0.0, math.sin(0.3), math.cos(0.3), 0.0, 0.0, 0.0,
           1.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32,
                                   np.int32, np.float32, np.float64])
def test_same_array_and_geometry_as_simpleitk(tmp_path, dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    a = (rng.integers(info.min, info.max, (5, 7, 9), endpoint=True).astype(dtype) if info
         else (rng.normal(0, 1000, (5, 7, 9))).astype(dtype))
    path = write_volume(tmp_path / "a.mha", a, spacing=(0.7, 0.55, 2.5),
                        origin=(-10.5, 3.25, 1e-7), direction=ROTATED, compress=False)
    got, want = read_mha(path), read_volume(path)
    assert got is not None
    assert got.array.dtype == want.array.dtype and got.array.shape == want.array.shape
    np.testing.assert_array_equal(got.array, want.array)
    assert (got.spacing, got.origin, got.direction) == (want.spacing, want.origin,
                                                        want.direction)
    assert got.direction != tuple(ROTATED[3 * j + i] for i in range(3) for j in range(3))
    assert not got.array.flags.writeable
    both = read_volumes([path, path], copy=False, direct=True)
    assert all(v.owner is None and v.spacing == want.spacing for v in both)  # not SimpleITK
    np.testing.assert_array_equal(both[1].array, want.array)


def _header(path, **changes):
    text = path.read_bytes()
    head, sep, data = text.partition(b"ElementDataFile = LOCAL\n")
    lines = head.decode().splitlines()
    for key, value in changes.items():
        lines = [ln for ln in lines if not ln.startswith(key + " ")]
        if value is not None:
            lines.insert(2, f"{key} = {value}")
    return ("\n".join(lines) + "\n").encode() + sep + data


def test_big_endian_data(tmp_path):
    a = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 30
    path = write_volume(tmp_path / "a.mha", a, compress=False)
    text = _header(path, BinaryDataByteOrderMSB="True")
    head, sep, _ = text.partition(b"LOCAL\n")
    path.write_bytes(head + sep + a.astype(">i2").tobytes())
    got, want = read_mha(path), read_volume(path)
    assert got is not None and got.array.dtype == np.int16
    np.testing.assert_array_equal(got.array, want.array)
    np.testing.assert_array_equal(got.array, a)


@pytest.mark.parametrize("changes", [
    {"ElementType": "MET_LONG_LONG"},  # a type it does not read
    {"ElementSize": "1 1 1"},  # a key it does not know
    {"NDims": "2"},
    {"ElementNumberOfChannels": "3"},
    {"TransformMatrix": None},  # missing geometry
])
def test_other_headers_are_left_to_simpleitk(tmp_path, changes):
    path = write_volume(tmp_path / "a.mha", np.zeros((3, 4, 5), np.float32), compress=False)
    path.write_bytes(_header(path, **changes))
    assert read_mha(path) is None


def test_other_formats_and_broken_files_go_to_simpleitk(tmp_path):
    a = np.ones((3, 4, 5), np.float32)
    assert read_mha(write_volume(tmp_path / "a.nii.gz", a)) is None
    path = write_volume(tmp_path / "t.mha", a, compress=False)
    path.write_bytes(path.read_bytes()[:-7])  # truncated data
    assert read_mha(path) is None
    with pytest.raises(EvaluationInputError, match="cannot be read"):
        read_volumes([path], copy=False, direct=True)
    assert read_mha(write_volume(tmp_path / "z.mha", a, compress=True)) is None


def test_read_volumes_keeps_the_order_of_mixed_files(tmp_path):
    # raw .mha files are read first, one after the other, the rest in threads: the result
    # still follows the order asked for
    arrays = [np.full((2, 3, 4), k, np.int16) for k in range(5)]
    paths = [write_volume(tmp_path / name, a, compress=name.endswith("z.mha"))
             for name, a in zip(["a.mha", "bz.mha", "c.nii.gz", "d.mha", "ez.mha"], arrays,
                                strict=True)]
    got = read_volumes(paths, copy=False, direct=True)
    assert [int(v.array.flat[0]) for v in got] == [0, 1, 2, 3, 4]
    assert [v.path for v in got] == paths
    assert got[2].owner is not None  # the NIfTI file went to SimpleITK
