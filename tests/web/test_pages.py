"""Server-rendered pages over the real services and a real (rolled-back) PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.datasets import jobs as import_jobs
from backend.models import (
    ChallengeRole,
    ImportJob,
    Phase,
    PhaseKind,
    Result,
    Submission,
    SubmissionStatus,
    User,
    utcnow,
)
from tests.backend.factories import (
    PASSWORD,
    add_member,
    make_challenge,
    make_dataset_version,
    make_image,
    make_phase,
    make_submission,
    make_user,
)
from tests.web.conftest import csrf_token, login

HTML = {"accept": "text/html"}


def test_public_pages_render_without_login(web: TestClient, db_session: Session) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    ph = make_phase(db_session, ch, make_dataset_version(db_session, ch),
                    closes_at=utcnow() + timedelta(days=2, hours=3))
    home = web.get("/", headers=HTML)
    assert home.status_code == 200 and ch.title in home.text
    page = web.get(f"/challenges/{ch.slug}", headers=HTML)
    assert ph.title in page.text and "2 d" in page.text and "Log in" in page.text
    phase = web.get(f"/challenges/{ch.slug}/{ph.slug}", headers=HTML)
    assert phase.status_code == 200
    assert "Time per case" in phase.text and "3 per day" in phase.text
    assert web.get("/static/vendor/htmx.min.js").status_code == 200
    missing = web.get(f"/challenges/{ch.slug}/nope", headers=HTML)
    assert missing.status_code == 404 and "has no phase" in missing.text
    # Pages that need an account send visitors to the login page and back.
    r = web.get("/submissions", headers=HTML)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/submissions"
    # The JSON API keeps its JSON errors.
    assert web.get("/api/challenges/nope").json() == {"detail": "There is no challenge 'nope'."}


def test_register_login_logout_with_csrf(web: TestClient, db_session: Session) -> None:
    token = csrf_token(web, "/register")
    refused = web.post("/register", data={"username": "ann", "email": "ann@example.org",
                                          "password": "longenough"})
    assert refused.status_code == 403 and "expired" in refused.text
    bad = web.post("/register", data={"username": "a b", "email": "x", "password": "short",
                                      "csrf_token": token})
    assert bad.status_code == 422 and "8 characters" in bad.text and "e-mail" in bad.text
    ok = web.post("/register", data={"username": "ann", "email": "ann@example.org",
                                     "password": "longenough", "csrf_token": token,
                                     "next": "/submissions"})
    assert ok.status_code == 303 and ok.headers["location"] == "/submissions"
    assert web.get("/submissions", headers=HTML).status_code == 200
    # The token is bound to the session: the pre-login token no longer works.
    assert web.post("/logout", data={"csrf_token": token}).status_code == 403
    assert web.post("/logout", data={"csrf_token": csrf_token(web)}).status_code == 303
    user = make_user(db_session)
    token = csrf_token(web, "/login")
    wrong = web.post("/login", data={"username": user.username, "password": "nope",
                                     "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
    right = web.post("/login", data={"username": user.username, "password": PASSWORD,
                                     "csrf_token": token, "next": "https://evil.example/"})
    assert right.status_code == 303 and right.headers["location"] == "/"


def test_join_and_submit_then_watch_status(
    web: TestClient, db_session: Session
) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    ph = make_phase(db_session, ch, make_dataset_version(db_session, ch, cases=4),
                    submissions_per_period=2)
    user = make_user(db_session)
    image = make_image(db_session, user)
    login(web, user)
    r = web.post(f"/challenges/{ch.slug}/join", data={"csrf_token": csrf_token(web)})
    assert r.status_code == 303
    page = web.get(f"/challenges/{ch.slug}/{ph.slug}", headers=HTML)
    assert "Drop your image tarball here" in page.text and image.name in page.text
    assert 'data-testid="remaining">2 of 2' in page.text
    r = web.post(f"/challenges/{ch.slug}/{ph.slug}/submit",
                 data={"image_id": str(image.id), "comment": "unet",
                       "csrf_token": csrf_token(web)})
    assert r.status_code == 303, r.text
    sub = db_session.scalars(select(Submission).where(Submission.user_id == user.id)).one()
    assert r.headers["location"] == f"/submissions/{sub.id}"
    detail = web.get(f"/submissions/{sub.id}", headers=HTML)
    assert "Queued" in detail.text and 'hx-trigger="every 2s"' in detail.text
    # The worker moves it on; the polled fragment follows.
    sub.status, sub.cases_done = SubmissionStatus.RUNNING, 1
    db_session.flush()
    frag = web.get(f"/submissions/{sub.id}/status")
    assert "Running case 2 of 4" in frag.text and "every 2s" in frag.text
    sub.status = SubmissionStatus.FAILED
    sub.error_message = "Case 1BA001 timed out after 600 s."
    db_session.flush()
    frag = web.get(f"/submissions/{sub.id}/status")
    assert "Failed" in frag.text and "every 2s" not in frag.text and "faster" in frag.text
    mine = web.get("/submissions", headers=HTML)
    assert f'data-submission="{sub.id}"' in mine.text and "unet" in mine.text
    # A second try while one is active is refused in plain words.
    sub.status = SubmissionStatus.PENDING
    db_session.flush()
    r = web.post(f"/challenges/{ch.slug}/{ph.slug}/submit",
                 data={"image_id": str(image.id), "csrf_token": csrf_token(web)})
    assert r.status_code == 303 and r.headers["location"].endswith("#submit")
    page = web.get(r.headers["location"].split("#")[0], headers=HTML)
    assert "still pending" in page.text
    # Other users cannot see it.
    login(web, make_user(db_session))
    assert web.get(f"/submissions/{sub.id}", headers=HTML).status_code == 404


def _board(db_session: Session) -> tuple[User, User, Phase, list[Submission]]:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    version = make_dataset_version(db_session, ch, cases=3)
    ph = make_phase(db_session, ch, version, show_case_results=True)
    me = make_user(db_session, name="zz-me")
    subs = []
    for i, user in enumerate([make_user(db_session), me, make_user(db_session)]):
        add_member(db_session, ch, user, ChallengeRole.PARTICIPANT)
        mae = 60.0 + 10 * i
        sub = make_submission(db_session, ph, user, metrics={"mae": mae, "psnr": 30.0 - i})
        subs.append(sub)
        from backend.submissions.pipeline import ensure_case_runs

        for j, run in enumerate(ensure_case_runs(db_session, sub)):
            db_session.add(Result(submission_id=sub.id, case_id=run.case_id,
                                  metrics={"mae": mae + j, "psnr": 30.0 - i + j / 10}))
    base = make_submission(db_session, ph, org, metrics={"mae": 99.0, "psnr": 20.0},
                           is_baseline=True)
    subs.append(base)
    db_session.flush()
    return org, me, ph, subs


def test_leaderboard_readable_without_js(web: TestClient, db_session: Session) -> None:
    _, me, ph, subs = _board(db_session)
    ch_slug = db_session.get(Phase, ph.id).challenge_id  # type: ignore[union-attr]
    from backend.models import Challenge

    slug = db_session.get(Challenge, ch_slug).slug  # type: ignore[union-attr]
    login(web, me)
    page = web.get(f"/challenges/{slug}/{ph.slug}/leaderboard", headers=HTML)
    assert page.status_code == 200
    text = page.text
    rows = text.split("<tbody>")[1].split("</tbody>")[0].split("<tr ")[1:]
    assert len(rows) == 4
    assert f'data-submission="{subs[0].id}"' in rows[0]
    assert 'class="own"' in rows[1] and "zz-me" in rows[1]
    assert "baseline" in rows[3] and "–" in rows[3]
    assert "Rank range" in text and "interval-bar" in text
    # Three cases cannot make a paired Wilcoxon test significant; the last ranked row has
    # no next rank to compare with.
    assert "vs next" in text and "not significant" in rows[0]
    assert "significant" not in rows[2]
    assert '?sort=psnr&amp;dir=desc' in text  # sortable without JS
    by_psnr = web.get(f"/challenges/{slug}/{ph.slug}/leaderboard?sort=mae&dir=desc",
                      headers=HTML).text
    assert by_psnr.index(f'data-submission="{subs[2].id}"') < by_psnr.index(
        f'data-submission="{subs[0].id}"')
    csv_text = web.get(f"/challenges/{slug}/{ph.slug}/leaderboard.csv").text
    table = list(csv.DictReader(io.StringIO(csv_text)))
    assert [r["rank"] for r in table] == ["1", "2", "3", ""]
    assert table[3]["baseline"] == "1"


def test_submission_detail_plots_and_slices_follow_access_rules(
    web: TestClient, db_session: Session, data_dir: object
) -> None:
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    from backend.config import settings
    from backend.models import Case, CaseRun

    _org, me, ph, subs = _board(db_session)
    mine = subs[1]
    run = db_session.scalars(select(CaseRun).where(CaseRun.submission_id == mine.id)).first()
    assert run is not None
    case = db_session.get(Case, run.case_id)
    assert case is not None
    vol = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))
    for rel in (case.input_image_path, case.ground_truth_path, "predictions/x/sct.mha"):
        path = settings.data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(vol, str(path))
    run.prediction_path = "predictions/x/sct.mha"
    db_session.flush()
    login(web, me)
    page = web.get(f"/submissions/{mine.id}", headers=HTML)
    assert page.status_code == 200
    assert page.text.count('data-plot="distribution"') == 2
    assert page.text.count('data-plot="comparison"') == 2
    assert "data-slice-viewer" in page.text and 'data-kind="ct"' not in page.text
    url = f"/submissions/{mine.id}/cases/{case.name}/slice.png"
    r = web.get(url + "?kind=sct&axis=axial&index=1")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert web.get(url + "?kind=ct").status_code == 404  # ground truth of a hidden case
    ph.kind = PhaseKind.DEBUG  # debug cases are public: CT and difference are shown
    db_session.flush()
    assert web.get(url + "?kind=diff&axis=coronal&index=2").status_code == 200
    assert web.get(url + "?kind=ct&axis=axial&index=9").status_code == 400
    ph.show_case_results = False
    db_session.flush()
    assert web.get(url + "?kind=input").status_code == 404
    assert "data-slice-viewer" not in web.get(f"/submissions/{mine.id}", headers=HTML).text
    login(web, make_user(db_session))
    assert web.get(url + "?kind=input").status_code == 404


def test_organizer_phase_form_validates_every_field(
    web: TestClient, db_session: Session
) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    make_dataset_version(db_session, ch)
    login(web, org)
    form_page = web.get(f"/manage/challenges/{ch.slug}/phases/new", headers=HTML)
    assert form_page.status_code == 200 and 'name="show_case_logs"' in form_page.text
    token = csrf_token(web)
    bad = web.post(f"/manage/challenges/{ch.slug}/phases/new", data={
        "csrf_token": token, "slug": "test", "title": "Test", "kind": "test",
        "opens_at": "2030-02-01T00:00", "closes_at": "2030-01-01T00:00",
        "submissions_per_period": "-1", "case_time_limit_s": "600", "memory_mb": "8192",
        "cpus": "2", "batch_size": "1", "primary_metric": "mae", "metric_profile": "synthrad2023",
        "ranking_method": "mean_rank", "submission_selection": "best"})
    assert bad.status_code == 422
    assert 'data-error-for="closes_at"' in bad.text and "close after it opens" in bad.text
    assert 'data-error-for="submissions_per_period"' in bad.text
    assert db_session.scalars(select(Phase).where(Phase.challenge_id == ch.id)).first() is None
    ok = web.post(f"/manage/challenges/{ch.slug}/phases/new", data={
        "csrf_token": token, "slug": "test", "title": "Test", "kind": "test", "is_open": "on",
        "opens_at": "2030-01-01T00:00", "closes_at": "2030-02-01T00:00",
        "submissions_per_period": "0", "submission_period_s": "", "case_time_limit_s": "60",
        "memory_mb": "1024", "cpus": "1", "batch_size": "2", "primary_metric": "mae",
        "metric_profile": "synthrad2025-phantom", "ranking_method": "absolute",
        "submission_selection": "latest", "extra_columns": "psnr higher",
        "leaderboard_public": "on"})
    assert ok.status_code == 303, ok.text
    phase = db_session.scalars(select(Phase).where(Phase.challenge_id == ch.id)).one()
    assert (phase.batch_size, phase.submissions_per_period, phase.submission_period_s) == (
        2, 0, None)
    assert phase.extra_columns == [{"metric": "psnr", "higher_is_better": True}]
    edit = web.post(f"/manage/challenges/{ch.slug}/phases/test", data={
        "csrf_token": token, "title": "Final test", "kind": "test",
        "submissions_per_period": "5", "submission_period_s": "3600", "case_time_limit_s": "0",
        "memory_mb": "1024", "cpus": "1", "batch_size": "1", "primary_metric": "mae",
        "metric_profile": "synthrad2025-phantom", "ranking_method": "absolute",
        "submission_selection": "best"})
    assert edit.status_code == 422 and 'data-error-for="case_time_limit_s"' in edit.text
    db_session.refresh(phase)
    assert phase.title == "Test"
    # Participants may not reach the organiser pages.
    login(web, make_user(db_session))
    assert web.get(f"/manage/challenges/{ch.slug}/phases/test", headers=HTML).status_code == 403


def test_organizer_submission_actions(web: TestClient, db_session: Session,
                                      broker_url: str) -> None:
    org, _, ph, subs = _board(db_session)
    from backend.models import Challenge

    ch = db_session.get(Challenge, ph.challenge_id)
    assert ch is not None
    login(web, org)
    listing = web.get(f"/manage/challenges/{ch.slug}/submissions", headers=HTML)
    assert listing.status_code == 200 and all(
        f'data-submission="{s.id}"' in listing.text for s in subs)
    token = csrf_token(web)
    target = subs[2]
    back = f"/manage/challenges/{ch.slug}/submissions"
    r = web.post(f"/manage/submissions/{target.id}/flags",
                 data={"csrf_token": token, "next": back, "is_disqualified": "true"})
    assert r.status_code == 303 and r.headers["location"] == back
    db_session.refresh(target)
    assert target.is_disqualified
    r = web.post(f"/manage/submissions/{target.id}/reevaluate",
                 data={"csrf_token": token, "next": back})
    assert r.status_code == 303
    db_session.refresh(target)
    assert target.status is SubmissionStatus.PENDING
    r = web.post(f"/manage/submissions/{target.id}/cancel",
                 data={"csrf_token": token, "next": back})
    db_session.refresh(target)
    assert target.status is SubmissionStatus.CANCELLED
    r = web.post(f"/manage/submissions/{target.id}/cancel",
                 data={"csrf_token": token, "next": back})
    assert "nothing to cancel" in web.get(back, headers=HTML).text
    results = web.get(f"/manage/submissions/{subs[0].id}/results.csv")
    assert results.status_code == 200 and results.text.startswith("case,status")
    assert web.get(f"/manage/submissions/{subs[0].id}/results.json").json()["cases"]
    assert web.get("/admin/", headers=HTML).status_code in (303, 307)  # not a site admin
    org.is_admin = True
    db_session.flush()
    assert web.get("/admin/user/list", headers=HTML).status_code == 200


def test_organizer_datasets_members_and_challenge(
    web: TestClient, db_session: Session, tmp_path: Path
) -> None:
    import numpy as np
    import SimpleITK as sitk  # noqa: N813

    for case in ("1BA001", "1BA002"):  # a SynthRAD-layout folder on the server
        folder = tmp_path / "synthrad" / "brain" / case
        folder.mkdir(parents=True)
        for name in ("mr", "ct", "mask"):
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.int16)),
                            str(folder / f"{name}.mha"))
    admin = make_user(db_session, admin=True)
    login(web, admin)
    token = csrf_token(web, "/manage")
    r = web.post("/manage/challenges/new", data={"csrf_token": token, "slug": "Bad Slug",
                                                 "title": "X"})
    assert r.status_code == 422 and "lower-case" in r.text
    r = web.post("/manage/challenges/new", data={"csrf_token": token, "slug": "task-1",
                                                 "title": "Task 1", "is_public": "on"})
    assert r.status_code == 303 and r.headers["location"] == "/manage/challenges/task-1"
    r = web.post("/manage/datasets", data={"csrf_token": token, "slug": "brain",
                                           "title": "Brain", "challenge": "task-1"})
    assert r.status_code == 303
    r = web.post("/manage/datasets/brain/import", data={
        "csrf_token": token, "source": "synthrad", "path": str(tmp_path / "synthrad")})
    assert r.status_code == 303
    page = web.get("/manage/datasets", headers=HTML).text
    assert "Import #" in page and "queued; its progress shows below" in page
    job = db_session.scalars(select(ImportJob).order_by(ImportJob.id.desc())).first()
    assert job is not None
    status_url = f"/manage/datasets/brain/imports/{job.id}/status"
    assert f'hx-get="{status_url}"' in page  # the progress box polls itself
    import_jobs.run(job.id)  # the worker's part, in-process (nothing is committed here)
    box = web.get(status_url, headers=HTML).text
    assert 'data-import-status="succeeded"' in box and "case 2/2" in box
    assert "hx-get" not in box  # finished: polling stops
    page = web.get("/manage/datasets", headers=HTML).text
    assert "v1</td><td class=\"num\">2" in page
    r = web.post("/manage/datasets/brain/import", data={"csrf_token": token,
                                                        "source": "synthrad", "path": ""})
    assert "SynthRAD folder" in web.get(r.headers["location"], headers=HTML).text
    other = make_user(db_session)
    r = web.post("/manage/challenges/task-1/members",
                 data={"csrf_token": token, "username": other.username, "role": "organizer"})
    assert r.status_code == 303
    r = web.post("/manage/challenges/task-1/members",
                 data={"csrf_token": token, "username": "nobody", "role": "participant"})
    page = web.get("/manage/challenges/task-1", headers=HTML).text
    assert "There is no user" in page and other.username in page
    # The new organiser manages the challenge but cannot create challenges.
    login(web, other)
    assert web.get("/manage/challenges/task-1", headers=HTML).status_code == 200
    assert web.get("/manage/challenges/new", headers=HTML).status_code == 403


def test_owner_cancels_running_submission_from_its_page(
    web: TestClient, db_session: Session
) -> None:
    org = make_user(db_session)
    ch = make_challenge(db_session, org)
    ph = make_phase(db_session, ch, make_dataset_version(db_session, ch, cases=2))
    user, other = make_user(db_session), make_user(db_session)
    sub = make_submission(db_session, ph, user, status=SubmissionStatus.RUNNING)
    login(web, other)
    assert web.get(f"/submissions/{sub.id}", headers=HTML).status_code == 404
    login(web, user)
    page = web.get(f"/submissions/{sub.id}", headers=HTML)
    assert f'action="/manage/submissions/{sub.id}/cancel"' in page.text
    r = web.post(f"/manage/submissions/{sub.id}/cancel",
                 data={"csrf_token": csrf_token(web), "next": f"/submissions/{sub.id}"})
    assert r.status_code == 303 and r.headers["location"] == f"/submissions/{sub.id}"
    db_session.refresh(sub)
    assert sub.status is SubmissionStatus.CANCELLED
    page = web.get(f"/submissions/{sub.id}", headers=HTML)
    assert f'action="/manage/submissions/{sub.id}/cancel"' not in page.text


def test_a_form_import_only_queues_the_work(
    web: TestClient, db_session: Session
) -> None:
    """The form checks the source and queues a background job: a 60-case realistic import
    (generation, plan optimisation: many minutes) answers at once and writes nothing."""
    import time

    from backend.config import settings

    admin = make_user(db_session, admin=True)
    login(web, admin)
    token = csrf_token(web, "/manage")
    assert web.post("/manage/challenges/new", data={
        "csrf_token": token, "slug": "slow", "title": "Slow"}).status_code == 303
    assert web.post("/manage/datasets", data={
        "csrf_token": token, "slug": "slow-ds", "title": "Slow", "challenge": "slow"},
    ).status_code == 303
    t0 = time.monotonic()
    r = web.post("/manage/datasets/slow-ds/import", data={
        "csrf_token": token, "source": "phantom", "anatomy": "pelvis", "cases": "60",
        "size": "realistic"})
    assert time.monotonic() - t0 < 2.0
    assert r.status_code == 303
    assert not settings.inputs_dir.exists() or not any(settings.inputs_dir.rglob("*.mha"))
    page = web.get(r.headers["location"], headers=HTML).text
    assert 'data-import-status="queued"' in page and "case 0/?" in page
    r = web.post("/manage/datasets/slow-ds/import", data={
        "csrf_token": token, "source": "synthrad", "path": "/no/such/folder"})
    assert "is not a folder on the server" in web.get(r.headers["location"], headers=HTML).text


def test_anonymous_leaderboard_is_kept_and_personalised(
        web: TestClient, db_session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anonymous visitors of a public leaderboard get the page kept in memory (built once),
    each with the CSRF token of their own browser; a signed-in viewer's page is built for
    them; a change to the leaderboard is shown at the next anonymous visit."""
    import re

    from backend.config import settings
    from backend.models import Challenge
    from backend.submissions import service as submissions_service
    from backend.submissions.schemas import SubmissionFlags
    from backend.web import csrf, leaderboard_view

    org, me, ph, subs = _board(db_session)
    slug = db_session.get(Challenge, ph.challenge_id).slug  # type: ignore[union-attr]
    url = f"/challenges/{slug}/{ph.slug}/leaderboard"
    builds: list[int] = []
    real_build = leaderboard_view.build

    def counted(*a: object, **kw: object) -> leaderboard_view.LbView:
        builds.append(1)
        return real_build(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(leaderboard_view, "build", counted)

    def visit() -> tuple[str, str, str]:
        web.cookies.clear()  # a new browser
        page = web.get(url, headers=HTML)
        assert page.status_code == 200
        token = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
        assert token is not None
        return page.text, page.cookies[csrf.COOKIE], token.group(1)

    first, cookie_a, token_a = visit()
    second, cookie_b, token_b = visit()
    assert len(builds) == 1 and cookie_a != cookie_b
    assert token_a == csrf._sign(cookie_a, "") and token_b == csrf._sign(cookie_b, "")
    assert first.replace(token_a, "") == second.replace(token_b, "")
    assert first.count('data-submission="') == 4
    login(web, me)
    mine = web.get(url, headers=HTML).text
    assert len(builds) == 2 and 'class="own"' in mine
    submissions_service.set_flags(db_session, org, subs[0].id, SubmissionFlags(is_hidden=True))
    db_session.flush()
    after, _, token_after = visit()
    assert len(builds) == 3 and after.count('data-submission="') == 3
    assert f'data-submission="{subs[0].id}"' not in after
    # due for confirmation at every visit: the database confirms the version, no new build
    monkeypatch.setattr(settings, "leaderboard_cache_s", 0.0)
    again, _, token_c = visit()
    assert len(builds) == 3 and again.replace(token_c, "") == after.replace(token_after, "")


def test_static_links_follow_each_request_host(web: TestClient) -> None:
    """The layout's links to static files are the route's path (kept per app) made absolute
    on each request's own base URL: another host or a root path is not served a kept one."""
    import re

    def css(base: str) -> str:
        page = web.get(base + "/", headers=HTML)
        assert page.status_code == 200
        found = re.search(r'<link rel="stylesheet" href="([^"]+)">', page.text)
        assert found is not None
        return found.group(1)

    assert css("http://one.example") == "http://one.example/static/css/app.css"
    assert css("http://two.example:8080") == "http://two.example:8080/static/css/app.css"
    web.app.root_path = "/arena"  # type: ignore[attr-defined]  # behind a path prefix
    try:
        assert css("http://one.example") == "http://one.example/arena/static/css/app.css"
    finally:
        web.app.root_path = ""  # type: ignore[attr-defined]
