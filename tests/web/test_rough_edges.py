"""What a newcomer met (issue 18): error pages, /docs offline, menus that led to 403s, the
organiser seeing "(you)" on someone else's submission, raw metric keys, the admin landing
page, and plots stretched by one absurd value."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.main import create_app
from backend.models import ChallengeRole, Result
from backend.web.plots import TeamValue, comparison_plot, distribution_plot, robust_range
from tests.backend.factories import (
    add_member,
    make_challenge,
    make_dataset_version,
    make_phase,
    make_submission,
    make_user,
)
from tests.web.conftest import login
from tests.web.test_pages import _board

HTML = {"accept": "text/html"}


def test_unknown_urls_get_a_page_in_browsers_and_json_in_the_api(web: TestClient) -> None:
    page = web.get("/no/such/page", headers=HTML)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "<h1>Not found</h1>" in page.text and 'class="topbar"' in page.text
    assert web.get("/no/such/page").json() == {"detail": "Not Found"}  # not a browser
    assert web.get("/api/nope", headers=HTML).json() == {"detail": "Not Found"}
    wrong_method = web.delete("/login", headers=HTML)
    assert wrong_method.status_code == 405 and "<h1>" in wrong_method.text
    invalid = web.post("/api/auth/login", json={}, headers=HTML)  # API validation: JSON
    assert invalid.status_code == 422 and isinstance(invalid.json()["detail"], list)


def test_a_bug_gets_an_error_page_not_a_bare_500(db_session: Session) -> None:
    app = create_app()

    # Injected fault: no real route fails on purpose, so the test adds one that does.
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/api/boom")
    def api_boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        page = client.get("/boom", headers=HTML)
        assert page.status_code == 500 and "<h1>Something went wrong" in page.text
        assert "a bug" not in page.text  # no internals shown
        api = client.get("/api/boom", headers=HTML)
        assert api.status_code == 500 and "nothing you did" in api.json()["detail"]


def test_docs_and_redoc_use_local_assets(web: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        page = web.get(path)
        assert page.status_code == 200
        assert "cdn." not in page.text and "fonts.googleapis" not in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', page.text):
            r = web.get(asset)
            assert r.status_code == 200 and len(r.content) > 10_000, asset
    assert web.get("/favicon.ico").headers["content-type"] == "image/svg+xml"
    assert 'rel="icon"' in web.get("/", headers=HTML).text


def test_participants_are_not_offered_organiser_pages(web: TestClient,
                                                      db_session: Session) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    participant = make_user(db_session)
    add_member(db_session, ch, participant, ChallengeRole.PARTICIPANT)
    login(web, participant)
    home = web.get("/", headers=HTML).text
    assert 'href="/manage"' not in home
    assert 'href="/manage/datasets"' not in web.get("/manage", headers=HTML).text
    login(web, org)
    assert 'href="/manage"' in web.get("/", headers=HTML).text
    manage = web.get(f"/manage/challenges/{ch.slug}", headers=HTML).text
    assert 'href="/manage/datasets"' in web.get("/manage", headers=HTML).text
    # "Add member" (the last role picker on the page) preselects participant.
    add_form = manage.split("Add member")[0].rsplit('<select name="role"', 1)[1]
    assert re.search(r'<option value="participant" selected>', add_form), add_form
    assert 'value="organizer" selected' not in add_form


def test_only_the_owner_reads_you_and_case_columns_have_labels(
    web: TestClient, db_session: Session
) -> None:
    org, me, _ph, subs = _board(db_session)
    for sub in subs[:3]:  # per-structure metrics the phase does not rank by
        for result in db_session.query(Result).filter_by(submission_id=sub.id):
            result.metrics = {**result.metrics, "dice_air": 0.9, "dvh_photon": 1.5}
    db_session.flush()
    login(web, me)
    own = web.get(f"/submissions/{subs[1].id}", headers=HTML).text
    assert "(you)" in own
    login(web, org)
    other = web.get(f"/submissions/{subs[1].id}", headers=HTML).text
    assert "(you)" not in other and "(this submission)" in other
    head = other.split('id="cases"')[1].split("</thead>")[0]
    assert "Dice (air)" in head and "DVH metric (photon)" in head
    assert ">dice_air<" not in head and ">dvh_photon<" not in head
    assert 'class="data compact"' in other


def test_admin_landing_page_lists_the_tables(web: TestClient, db_session: Session) -> None:
    login(web, make_user(db_session, admin=True))
    page = web.get("/admin/", headers=HTML)
    assert page.status_code == 200
    assert "Database admin" in page.text and "Challenge roles" in page.text
    assert "view (read-only)" in page.text


def test_phase_window_reads_in_words(web: TestClient, db_session: Session) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    ph = make_phase(db_session, ch, make_dataset_version(db_session, ch), opens_at=None,
                    closes_at=None)
    page = web.get(f"/challenges/{ch.slug}/{ph.slug}", headers=HTML).text
    assert "no end" not in page and "now →" not in page
    assert "no opening or closing date" in page
    ph.closes_at = ph.created_at
    db_session.flush()
    page = web.get(f"/challenges/{ch.slug}/{ph.slug}", headers=HTML).text
    assert "<dd>until 20" in page


def test_phase_badges_show_the_status_widget(web: TestClient, db_session: Session) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    ph = make_phase(db_session, ch, make_dataset_version(db_session, ch))
    me = make_user(db_session)
    add_member(db_session, ch, me, ChallengeRole.PARTICIPANT)
    from backend.models import SubmissionStatus

    sub = make_submission(db_session, ph, me, status=SubmissionStatus.PENDING)
    login(web, me)
    page = web.get(f"/challenges/{ch.slug}/{ph.slug}", headers=HTML).text
    widget = page.split(f'id="status-{sub.id}"')[1].split("</div>")[0]
    assert f'hx-get="/submissions/{sub.id}/status"' in widget
    assert "StatusView" not in page and "Queued" in page


def test_one_absurd_value_does_not_stretch_the_axis() -> None:
    assert robust_range([30.0, 35.0, 1e30]) == (30.0, 35.0)
    assert robust_range([30.0, 1e30]) == (30.0, 30.0)
    assert robust_range([30.0, 35.0, 38.0]) == (30.0, 38.0)  # ordinary spread kept
    assert robust_range([-1e30, 0.5, 0.6, 0.7]) == (0.5, 0.7)
    svg = str(comparison_plot([TeamValue("a", 30.0, own=True), TeamValue("b", 35.0),
                               TeamValue("c", 1e30)], metric_label="MAE"))
    ticks = [float(t) for t in re.findall(r'text-anchor="(?:start|middle|end)">([\d.]+)<', svg)]
    assert ticks and max(ticks) < 100  # the axis covers the ordinary values
    assert 'class="outlier"' in svg and "1.00e+30 →" in svg  # the outlier, at the edge
    xs = [float(x) for x in re.findall(r'<rect class="box[^"]*" x="([\d.]+)"', svg)]
    assert max(xs) - min(xs) > 50  # a and b are told apart
    svg = str(distribution_plot([("x", 1.0), ("y", 2.0), ("z", -1e30)], metric_label="MAE"))
    assert "← -1.00e+30" in svg


def test_close_values_are_all_on_the_scale() -> None:
    # The last tick can fall short of the largest value; that value is not an outlier.
    svg = str(distribution_plot([("a", 18.268), ("b", 18.2695), ("c", 18.27104)],
                                metric_label="PSNR"))
    assert "outlier" not in svg and svg.count('class="dot"') == 3
    svg = str(comparison_plot([TeamValue("a", 18.268), TeamValue("b", 18.27104)],
                              metric_label="PSNR", higher_is_better=True))
    assert "outlier" not in svg
