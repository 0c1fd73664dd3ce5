"""The phase's geometry policy on real files: 'reject' fails an sCT whose spacing, origin or
direction differs from the input's; 'impose' gives it the input's geometry (as SynthRAD's
official evaluation does) and says so; a different size fails under both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813

from tests.worker.helpers import write_case
from worker.provision import CaseInput, OutputError, check_output, store_output


def _sct(case: CaseInput, out: Path, *, spacing: tuple[float, ...] | None = None,
         origin: tuple[float, ...] | None = None, crop: bool = False) -> Path:
    ref: Any = sitk.ReadImage(str(case.image_path))
    arr = sitk.GetArrayFromImage(ref).astype(np.float32)
    img: Any = sitk.GetImageFromArray(arr[:-1] if crop else arr)
    img.SetSpacing(spacing or ref.GetSpacing())
    img.SetOrigin(origin or ref.GetOrigin())
    img.SetDirection(ref.GetDirection())
    path = out / f"{case.name}.mha"
    out.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def test_reject_names_what_differs(tmp_path: Path) -> None:
    case = write_case(tmp_path, "1BA001")
    sct = _sct(case, tmp_path / "out", spacing=(2.0, 2.0, 5.0))
    with pytest.raises(OutputError, match=r"spacing \(2, 2, 5\) but the input has \(1, 1, 2.5\)"):
        check_output(case, [sct], batch=False)


def test_impose_gives_the_input_geometry_and_a_warning(tmp_path: Path) -> None:
    case = write_case(tmp_path, "1BA001")
    sct = _sct(case, tmp_path / "out", spacing=(2.0, 2.0, 5.0), origin=(0.0, 0.0, 0.0))
    checked = check_output(case, [sct], batch=False, impose_geometry=True)
    assert "spacing (2, 2, 5) (input: (1, 1, 2.5))" in checked.warning
    assert "origin" in checked.warning and "imposed" in checked.warning
    target = tmp_path / "stored" / "1BA001.mha"
    target.parent.mkdir()
    assert store_output(checked, target) == target
    stored: Any = sitk.ReadImage(str(target))
    ref: Any = sitk.ReadImage(str(case.image_path))
    assert stored.GetSpacing() == ref.GetSpacing() and stored.GetOrigin() == ref.GetOrigin()
    # The voxels are the participant's, untouched.
    np.testing.assert_array_equal(sitk.GetArrayFromImage(stored),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(sct))))


def test_impose_leaves_a_matching_sct_alone(tmp_path: Path) -> None:
    case = write_case(tmp_path, "1BA001")
    sct = _sct(case, tmp_path / "out")
    checked = check_output(case, [sct], batch=False, impose_geometry=True)
    assert checked.imposed is None and checked.warning == "" and checked.path == sct


def test_impose_never_resamples_another_size(tmp_path: Path) -> None:
    case = write_case(tmp_path, "1BA001")
    sct = _sct(case, tmp_path / "out", crop=True)
    with pytest.raises(OutputError, match="has size"):
        check_output(case, [sct], batch=False, impose_geometry=True)
