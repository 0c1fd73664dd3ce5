"""The dose views in a real Chromium against uvicorn and PostgreSQL, without the worker: a
case with real photon and proton plans is scored by the worker's dose step (its products
stored the way an evaluation stores them); the organiser sees the dose washes, difference,
gamma map and the DVH with the metric's points, photon and proton, on every axis; the
participant only the dose on their own sCT, and nothing where the phase hides per-case
results. Screenshots go to test-artifacts/ (ignored by git).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_browser import CHROMIUM, PASSWORD, chromium, serve_app, shot
from tests.worker import harness

pytestmark = [pytest.mark.browser, pytest.mark.slow]

KINDS = ["dose_ct", "dose_sct", "dose_diff", "gamma"]


@dataclass
class Site:
    base_url: str
    phase_id: int
    submission_id: int
    case_name: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from backend.db import session_scope
    from backend.models import (
        AggregateResult,
        Case,
        CaseRunStatus,
        ChallengeMember,
        ChallengeRole,
        Result,
        Submission,
        SubmissionStatus,
    )
    from backend.security import hash_password
    from backend.submissions.pipeline import ensure_case_runs
    from tests.web import dose_case

    with harness.settings_restored():
        data_dir = tmp_path_factory.mktemp("dose-data")
        env = harness.setup("syntharena_dose_browser_test", data_dir, redis_db=11)
        with session_scope() as s:
            phase = harness.seed_phase(s, data_dir, slug="validation", n_cases=1,
                                       shape=(8, 16, 16), show_case_results=True)
            members = {}
            for name, role in (("alice", ChallengeRole.PARTICIPANT),
                               ("olga", ChallengeRole.ORGANIZER)):
                u = harness.user(s, name)
                u.password_hash = hash_password(PASSWORD)
                s.add(ChallengeMember(challenge_id=phase.challenge_id, user_id=u.id, role=role))
                members[name] = u
            image = harness.register_tarball(s, members["alice"], "alice-algo", Path(__file__))
            sub = Submission(phase_id=phase.id, user_id=members["alice"].id, image_id=image.id,
                             status=SubmissionStatus.SUCCEEDED)
            s.add(sub)
            s.flush()
            run = ensure_case_runs(s, sub)[0]
            case = s.get(Case, run.case_id)
            assert case is not None
            dose_case.write_case(data_dir, case)
            run.prediction_path, dose = dose_case.score(data_dir, case, sub.id, run.id)
            assert "dose_error" not in dose, dose
            run.status, run.duration_s = CaseRunStatus.SUCCEEDED, 12.0
            metrics = {"mae": 40.0, "psnr": 30.0, **dose}
            s.add(Result(submission_id=sub.id, case_id=case.id, metrics=metrics))
            s.add(AggregateResult(submission_id=sub.id, metrics=metrics, statistics={},
                                  cases_scored=1))
            s.flush()
            ids = (phase.id, sub.id, case.name)
        with serve_app({**env.env(), "SYNTHARENA_SECRET_KEY": "dose-test-secret"},
                       "dose-uvicorn.log") as base_url:
            yield Site(base_url, *ids)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with chromium() as b:
        yield b


def _page(browser: Any, site: Site, username: str) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{site.base_url}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base_url}/")
    page.goto(f"{site.base_url}/submissions/{site.submission_id}")
    return page


def _loaded(page: Any, kinds: list[str], axis: str, modality: str) -> None:
    """Wait until every dose pane shows a decoded PNG of this axis and plan."""
    page.wait_for_function(
        """([kinds, axis, modality]) => kinds.every(k => {
             const img = document.querySelector(`img[data-dose-kind=${k}]`);
             return img && img.complete && img.naturalWidth > 1
               && img.src.includes(`axis=${axis}`) && img.src.includes(`modality=${modality}`);
           })""", arg=[kinds, axis, modality], timeout=20000)


def _dose_section(page: Any, name: str) -> None:
    page.locator("[data-dose-viewer]").scroll_into_view_if_needed()
    page.locator("[data-dose-viewer]").screenshot(path=str(shot_path(name)))
    shot(page, name + "-page")


def shot_path(name: str) -> Path:
    from tests.e2e.test_browser import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / f"{name}.png"


def test_organiser_sees_dose_difference_gamma_and_dvh(site: Site, browser: Any) -> None:
    page = _page(browser, site, "olga")
    shown = page.eval_on_selector_all("img[data-dose-kind]",
                                      "xs => xs.map(x => x.dataset.doseKind)")
    assert shown == KINDS
    _loaded(page, KINDS, "axial", "photon")
    page.wait_for_selector("svg.dvh[data-modality=photon]")
    # CT (solid) and sCT (dashed) curves of the target and both organs at risk.
    for source in ("ct", "sct"):
        curves = page.eval_on_selector_all(
            f"path.dvh-curve[data-source={source}]", "xs => xs.map(x => x.dataset.structure)")
        assert curves == ["PTV", "OAR_A", "OAR_B"], (source, curves)
    for point in ("D98", "V95", "D2", "Dmean"):
        assert page.locator(f".dvh-point[data-point={point}][data-source=ct]").count() >= 1
        assert page.locator(f".dvh-point[data-point={point}][data-source=sct]").count() >= 1
    assert "→" in page.locator("table.dvh-points tbody tr").first.inner_text()
    _dose_section(page, "dose-organiser-photon-axial")
    page.select_option("select[name=modality]", "proton")
    page.select_option("select[name=axis]", "coronal")
    _loaded(page, KINDS, "coronal", "proton")
    page.wait_for_selector("svg.dvh[data-modality=proton]")
    # The slider moves the dose panes with the CT.
    page.eval_on_selector("input[name=index]", "s => { s.value = '10';"
                          " s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.querySelector('img[data-dose-kind=gamma]')"
                           ".src.includes('index=10')")
    _loaded(page, KINDS, "coronal", "proton")
    _dose_section(page, "dose-organiser-proton-coronal")
    page.select_option("select[name=axis]", "sagittal")
    _loaded(page, KINDS, "sagittal", "proton")
    page.close()


def test_participant_sees_only_the_dose_on_their_sct(site: Site, browser: Any) -> None:
    page = _page(browser, site, "alice")
    shown = page.eval_on_selector_all("img[data-dose-kind]",
                                      "xs => xs.map(x => x.dataset.doseKind)")
    assert shown == ["dose_sct"]
    _loaded(page, ["dose_sct"], "axial", "photon")
    page.wait_for_selector("svg.dvh[data-modality=photon]")
    assert page.locator("path.dvh-curve[data-source=sct]").count() == 3
    assert page.locator("[data-source=ct]").count() == 0  # no reference-CT curve or point
    assert "sCT only" in page.locator(".dvh-note").inner_text()
    base = f"{site.base_url}/submissions/{site.submission_id}/cases/{site.case_name}"
    for kind in ("dose_ct", "dose_diff", "gamma"):
        r = page.request.get(f"{base}/dose.png?kind={kind}&index=18")
        assert r.status == 404, kind
    _dose_section(page, "dose-participant")
    page.close()


def test_no_dose_views_where_the_phase_hides_case_results(site: Site, browser: Any) -> None:
    from backend.db import session_scope
    from backend.models import Phase

    def show(value: bool) -> None:
        with session_scope() as s:
            phase = s.get(Phase, site.phase_id)
            assert phase is not None
            phase.show_case_results = value

    show(False)
    try:
        page = _page(browser, site, "alice")
        assert page.locator("[data-dose-viewer]").count() == 0
        base = f"{site.base_url}/submissions/{site.submission_id}/cases/{site.case_name}"
        assert page.request.get(f"{base}/dose.png?kind=dose_sct&index=18").status == 403
        assert page.request.get(f"{base}/dvh").status == 403
        shot(page, "dose-participant-hidden")
        page.close()
    finally:
        show(True)
