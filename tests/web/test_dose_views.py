"""Dose views of a scored case: stored once by the worker's dose step, served (not computed)
as PNG slices, a DVH plot and JSON, with the access rules of ``access.submission_view``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.config import settings
from backend.models import Case, ChallengeRole, Phase, PhaseKind, Submission, User
from backend.submissions.pipeline import ensure_case_runs
from evaluator import dose_products
from tests.backend.factories import (
    add_member,
    auth,
    make_challenge,
    make_dataset_version,
    make_phase,
    make_submission,
    make_user,
)
from tests.web import dose_case
from tests.web.conftest import login
from tests.web.test_components import decode_png

HTML = {"accept": "text/html"}
KINDS = ("dose_ct", "dose_sct", "dose_diff", "gamma")


def _scored(db: Session, data_dir: Path) -> tuple[User, User, Phase, Submission, Case, dict[
        str, float]]:
    """An organiser, a participant's succeeded submission whose one case has real plans and
    stored dose products, in a validation phase that shows per-case results."""
    org = make_user(db)
    ch = make_challenge(db, org)
    version = make_dataset_version(db, ch, cases=1)
    phase = make_phase(db, ch, version, show_case_results=True)
    me = make_user(db)
    add_member(db, ch, me, ChallengeRole.PARTICIPANT)
    sub = make_submission(db, phase, me)
    run = ensure_case_runs(db, sub)[0]
    case = db.get(Case, run.case_id)
    assert case is not None
    dose_case.write_case(data_dir, case)
    run.prediction_path, metrics = dose_case.score(data_dir, case, sub.id, run.id)
    db.flush()
    return org, me, phase, sub, case, metrics


def test_the_dose_step_stores_compact_products(data_dir: Path, db_session: Session) -> None:
    _, _, _, sub, case, metrics = _scored(db_session, data_dir)
    assert {"gamma_photon", "dvh_photon", "mae_target_proton"} <= set(metrics)
    npz, meta_path = dose_products.paths(
        settings.data_dir / "predictions" / str(sub.id) / f"{case.name}.mha", case.name)
    meta = dose_products.read_meta(meta_path)
    assert meta is not None and set(meta["modalities"]) == {"photon", "proton"}
    arrays = dose_products.read_arrays(npz)
    for modality in ("photon", "proton"):
        assert arrays[f"{modality}/dose_ct"].dtype == np.float16
        assert arrays[f"{modality}/gamma"].dtype == np.uint8
        m = meta["modalities"][modality]
        # The stored map's pass rate is the scored one: the map is the metric's own.
        assert m["gamma"]["pass_rate_pct"] == pytest.approx(metrics[f"gamma_{modality}"],
                                                            abs=1e-3)
        target = next(s for s in m["dvh"] if s["role"] == "target")
        assert set(target["points"]["ct"]) == {"D98", "D2", "Dmean", "V95"}
        assert target["ct"][0] == 100.0 and len(target["ct"]) == len(m["dose_levels_gy"])
    # Compact: float16 at the dose grid is under a few bytes per CT voxel, all maps together.
    assert npz.stat().st_size < 8 * 36**3
    # A re-evaluation whose dose fails leaves no stale views behind.
    case_plan = settings.data_dir / str(case.plan_path)
    case_plan.write_text("{not json")
    (settings.data_dir / case.ground_truth_path).parent.joinpath("plan_proton.json").unlink()
    _, again = dose_case.score(data_dir, case, sub.id, 0)
    assert "dose_error" in again and not npz.exists() and not meta_path.exists()


def test_organiser_sees_every_dose_view(web: TestClient, data_dir: Path,
                                        db_session: Session) -> None:
    org, _, _, sub, case, _ = _scored(db_session, data_dir)
    login(web, org)
    page = web.get(f"/submissions/{sub.id}", headers=HTML)
    assert page.status_code == 200 and "data-dose-viewer" in page.text
    assert all(f'data-dose-kind="{k}"' in page.text for k in KINDS)
    assert 'data-dose="photon proton"' in page.text
    url = f"/submissions/{sub.id}/cases/{case.name}/dose.png"
    for kind in KINDS:
        r = web.get(f"{url}?kind={kind}&modality=proton&axis=axial&index=18")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        w, h, colour_type, raw = decode_png(r.content)
        assert (w, h, colour_type) == (36, 36, 2)
        rgb = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)[:, 1:].reshape(h, w, 3)
        # Coloured where the dose is (the gray CT has R == G == B everywhere).
        assert (rgb[..., 0] != rgb[..., 2]).any(), kind
    gamma = web.get(f"{url}?kind=gamma&modality=proton&axis=coronal&index=18")
    # The proton sCT fails gamma somewhere: red (fail) pixels are drawn.
    _, h, _, raw = decode_png(gamma.content)
    px = np.frombuffer(raw, np.uint8).reshape(h, -1)[:, 1:].reshape(h, -1, 3).astype(int)
    assert ((px[..., 0] - px[..., 1]) > 60).any()
    dvh = web.get(f"/submissions/{sub.id}/cases/{case.name}/dvh?modality=photon")
    assert dvh.status_code == 200 and 'data-source="ct"' in dvh.text
    for point in ("D98", "V95", "D2", "Dmean"):
        assert f'data-point="{point}" data-source="ct"' in dvh.text
        assert f'data-point="{point}" data-source="sct"' in dvh.text
    api = web.get(f"/api/submissions/{sub.id}/cases/{case.name}/dose",
                  headers=auth(db_session, org)).json()
    assert api["views"] == list(KINDS) and api["ground_truth"] is True
    ptv = api["modalities"]["photon"]["structures"][0]
    assert ptv["name"] == "PTV" and "ct" in ptv and "gamma" in api["modalities"]["photon"]
    # Out-of-range slices and unknown kinds are the caller's mistake, said so.
    assert web.get(f"{url}?kind=dose_ct&index=99").status_code == 400
    assert web.get(f"{url}?kind=mri").status_code == 400
    assert web.get(f"{url}?kind=dose_ct&modality=electron").status_code == 400


def test_participant_sees_only_the_dose_on_their_sct(
    web: TestClient, data_dir: Path, db_session: Session
) -> None:
    _, me, phase, sub, case, _ = _scored(db_session, data_dir)
    login(web, me)
    page = web.get(f"/submissions/{sub.id}", headers=HTML)
    assert 'data-dose-kind="dose_sct"' in page.text
    assert 'data-dose-kind="dose_ct"' not in page.text and "over the sCT" in page.text
    url = f"/submissions/{sub.id}/cases/{case.name}/dose.png"
    assert web.get(f"{url}?kind=dose_sct&index=18").status_code == 200
    for kind in ("dose_ct", "dose_diff", "gamma"):  # derived from the reference CT
        assert web.get(f"{url}?kind={kind}&index=18").status_code == 404
    dvh = web.get(f"/submissions/{sub.id}/cases/{case.name}/dvh?modality=proton")
    assert 'data-source="sct"' in dvh.text and 'data-source="ct"' not in dvh.text
    api_url = f"/api/submissions/{sub.id}/cases/{case.name}/dose"
    headers = auth(db_session, me)
    api = web.get(api_url, headers=headers).json()
    assert api["views"] == ["dose_sct"] and api["ground_truth"] is False
    for m in api["modalities"].values():
        assert "gamma" not in m
        assert all("ct" not in s and set(s["points"]) == {"sct"} and s["in_metric"] is None
                   for s in m["structures"])
    # A debug phase's cases are not hidden: everything is shown.
    phase.kind = PhaseKind.DEBUG
    db_session.flush()
    assert web.get(f"{url}?kind=gamma&index=18").status_code == 200
    assert web.get(api_url, headers=headers).json()["ground_truth"] is True
    # Where the phase hides per-case results, there are no dose views at all.
    phase.show_case_results = False
    db_session.flush()
    assert "data-dose-viewer" not in web.get(f"/submissions/{sub.id}", headers=HTML).text
    assert web.get(f"{url}?kind=dose_sct&index=18").status_code == 403
    assert web.get(f"/submissions/{sub.id}/cases/{case.name}/dvh").status_code == 403
    assert web.get(api_url, headers=headers).status_code == 403
    # Someone else's submission is not found, whatever the phase shows.
    phase.show_case_results = True
    db_session.flush()
    other = make_user(db_session)
    login(web, other)
    assert web.get(f"{url}?kind=dose_sct&index=18").status_code == 404
    assert web.get(api_url, headers=auth(db_session, other)).status_code == 404


def test_a_case_without_plans_has_no_dose_views(web: TestClient, data_dir: Path,
                                                db_session: Session) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    phase = make_phase(db_session, ch, make_dataset_version(db_session, ch, cases=1),
                       show_case_results=True)
    sub = make_submission(db_session, phase, org)
    run = ensure_case_runs(db_session, sub)[0]
    case = db_session.get(Case, run.case_id)
    assert case is not None
    dose_case.write_case(data_dir, case)
    case.plan_path = None
    run.prediction_path = f"predictions/{sub.id}/{case.name}.mha"
    dose_case.write_image_like_ct(data_dir, run.prediction_path)
    db_session.flush()
    login(web, org)
    page = web.get(f"/submissions/{sub.id}", headers=HTML)
    assert "data-slice-viewer" in page.text and "data-dose-viewer" not in page.text
    r = web.get(f"/submissions/{sub.id}/cases/{case.name}/dose.png?kind=dose_ct")
    assert r.status_code == 404 and "no photon dose" in r.text
    api = web.get(f"/api/submissions/{sub.id}/cases/{case.name}/dose",
                  headers=auth(db_session, org))
    assert api.status_code == 404 and "no dose views" in api.json()["detail"]
