from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk  # noqa: N813
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.config import settings
from tests.backend import factories as f


def _volume(path: Path, value: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.Image(4, 4, 3, sitk.sitkFloat32)
    image += value
    sitk.WriteImage(image, str(path))


def _synthrad(root: Path, ext: str, layout: dict[str, list[str]], modality: str) -> Path:
    for region, cases in layout.items():
        for case in cases:
            d = root / region / case
            for name, v in ((modality, 1.0), ("ct", 2.0), ("mask", 1.0)):
                _volume(d / f"{name}{ext}", v)
    return root


def test_import_synthrad_2023(client: TestClient, db_session: Session, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    h, slug = f.api_dataset(client, db_session)
    root = _synthrad(tmp_path / "Task1", ".nii.gz", {"brain": ["1BA001", "1BA002"],
                                                     "pelvis": ["1PA001"]}, "mr")
    r = client.post(f"/api/datasets/{slug}/versions", headers=h,
                    json={"source": "synthrad", "path": str(root)})
    assert r.status_code == 403 and "import folders" in r.json()["detail"]
    monkeypatch.setattr(settings, "dataset_import_roots", [tmp_path])
    r = client.post(f"/api/datasets/{slug}/versions", headers=h,
                    json={"source": "synthrad", "path": str(root)})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["case_count"] == 3
    cases = client.get(f"/api/datasets/{slug}/versions/1/cases", headers=h).json()
    assert [(c["name"], c["region"], c["modality"]) for c in cases] == [
        ("1BA001", "Brain", "mri"), ("1BA002", "Brain", "mri"), ("1PA001", "Pelvis", "mri")]
    case = cases[0]
    assert case["input_image_path"].startswith("inputs/") and case["input_image_path"].endswith(
        "mri.mha")
    assert case["ground_truth_path"].startswith("groundtruth/")
    assert case["ground_truth_path"].endswith("ct.nii.gz")
    assert (settings.data_dir / case["mask_path"]).is_file()
    region = settings.data_dir / Path(case["input_image_path"]).parent / "region.json"
    assert json.loads(region.read_text()) == "Brain"
    # Nothing of the ground truth sits under the inputs root.
    assert not list(settings.inputs_dir.rglob("ct*"))
    r = client.post(f"/api/datasets/{slug}/versions", headers=h,
                    json={"source": "synthrad", "path": str(root)})
    assert r.json()["version"] == 2


def test_import_synthrad_2025_mha(client: TestClient, db_session: Session,
                                  tmp_path: Path) -> None:
    admin = f.make_user(db_session, admin=True)
    h = f.auth(db_session, admin)
    slug = client.post("/api/datasets", headers=h, json={"slug": f"ds-{f.uid()}",
                                                         "title": "2025"}).json()["slug"]
    root = _synthrad(tmp_path / "Task2", ".mha", {"HN": ["2HNA001"], "AB": ["2ABA001"]},
                     "cbct")
    r = client.post(f"/api/datasets/{slug}/versions", headers=h,
                    json={"source": "synthrad", "path": str(root)})
    assert r.status_code == 201, r.text
    cases = client.get(f"/api/datasets/{slug}/versions/1/cases", headers=h).json()
    assert {(c["region"], c["modality"]) for c in cases} == {("Head and Neck", "cbct"),
                                                             ("Abdomen", "cbct")}
    empty = tmp_path / "empty"
    empty.mkdir()
    r = client.post(f"/api/datasets/{slug}/versions", headers=h,
                    json={"source": "synthrad", "path": str(empty)})
    assert r.status_code == 400 and "No cases found" in r.json()["detail"]


def test_import_phantoms(client: TestClient, db_session: Session) -> None:
    pytest.importorskip("evaluator.phantoms")
    h, slug = f.api_dataset(client, db_session)
    r = client.post(f"/api/datasets/{slug}/versions", headers=h,
                    json={"source": "phantom", "anatomy": "brain", "cases": 2, "seed": 1})
    assert r.status_code == 201, r.text
    cases = client.get(f"/api/datasets/{slug}/versions/1/cases", headers=h).json()
    assert len(cases) == 2 and all(c["labels_path"] for c in cases)


def test_import_phantoms_with_plans_keeps_them_with_the_ground_truth(
    client: TestClient, db_session: Session
) -> None:
    pytest.importorskip("evaluator.dose")
    h, slug = f.api_dataset(client, db_session)
    r = client.post(f"/api/datasets/{slug}/versions", headers=h, json={
        "source": "phantom", "anatomy": "brain", "cases": 1, "seed": 2, "plans": True})
    assert r.status_code == 201, r.text
    [case] = client.get(f"/api/datasets/{slug}/versions/1/cases", headers=h).json()
    plan = settings.data_dir / case["plan_path"]
    assert plan.name == "plan_photon.json" and plan.parent.is_relative_to(settings.groundtruth_dir)
    # Everything evaluator.dose reads sits beside the plan, nothing on the input side.
    names = {p.name for p in plan.parent.iterdir()}
    assert {"ct.mha", "plan_photon.json", "plan_proton.json", "structures.mha"} <= names
    inputs = {p.name for p in (settings.data_dir / case["input_image_path"]).parent.iterdir()}
    assert not inputs & {"ct.mha", "plan_photon.json", "plan_proton.json", "structures.mha"}


def test_plan_naming_a_missing_structure_map_is_refused(
    client: TestClient, db_session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evaluator.phantoms import generate_dataset

    h, slug = f.api_dataset(client, db_session)
    [case] = generate_dataset(tmp_path / "brain", "brain", 1, seed=3)
    (case / "plan_photon.json").write_text('{"structure_file": "../../etc/passwd"}')
    monkeypatch.setattr(settings, "dataset_import_roots", [tmp_path])
    r = client.post(f"/api/datasets/{slug}/versions", headers=h,
                    json={"source": "synthrad", "path": str(tmp_path / "brain")})
    assert r.status_code == 400
    assert "names the structure map '../../etc/passwd'" in r.json()["detail"]


def test_participants_cannot_reach_datasets(client: TestClient, db_session: Session) -> None:
    _h, slug = f.api_dataset(client, db_session)
    other = f.auth(db_session, f.make_user(db_session))
    assert client.get(f"/api/datasets/{slug}", headers=other).status_code == 403
    assert client.get(f"/api/datasets/{slug}/versions/1/cases", headers=other).status_code == 403
    assert client.get("/api/datasets", headers=other).json() == []
