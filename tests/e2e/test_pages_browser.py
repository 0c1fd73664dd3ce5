"""Pages in a real Chromium against uvicorn and PostgreSQL, without the worker: HTML error
pages (JSON under /api), the phase page's submission badges following the submission live,
and /docs working without internet. The submission's progress is written to the database
the way the worker's state transitions write it. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_browser import (
    CHROMIUM,
    PASSWORD,
    chromium,
    drop_file,
    register,
    serve_app,
    shot,
)
from tests.worker import harness

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@dataclass
class Site:
    base_url: str
    phase_slug: str
    submission_id: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from backend.db import session_scope
    from backend.models import ChallengeMember, ChallengeRole, Submission, SubmissionStatus
    from backend.security import hash_password

    with harness.settings_restored():
        data_dir = tmp_path_factory.mktemp("pages-data")
        env = harness.setup("syntharena_pages_browser_test", data_dir, redis_db=13)
        with session_scope() as s:
            phase = harness.seed_phase(s, data_dir, slug="validation", n_cases=3,
                                       shape=(8, 16, 16), show_case_results=True)
            alice = harness.user(s, "alice")
            alice.password_hash = hash_password(PASSWORD)
            s.add(ChallengeMember(challenge_id=phase.challenge_id, user_id=alice.id,
                                  role=ChallengeRole.PARTICIPANT))
            image = harness.register_tarball(s, alice, "alice-algo", Path(__file__))
            sub = Submission(phase_id=phase.id, user_id=alice.id, image_id=image.id,
                             status=SubmissionStatus.PENDING)
            s.add(sub)
            s.flush()
            ids = (phase.slug, sub.id)
        with serve_app({**env.env(), "SYNTHARENA_SECRET_KEY": "pages-test-secret"},
                       "pages-uvicorn.log") as base_url:
            yield Site(base_url, *ids)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    with chromium() as b:
        yield b


def _login(page: Any, base: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_error_pages_are_html_for_browsers(site: Site, browser: Any) -> None:
    page = browser.new_page()
    base = site.base_url
    response = page.goto(f"{base}/no/such/page")
    assert response.status == 404
    assert "text/html" in response.headers["content-type"]
    assert page.locator("h1").inner_text() == "Not found"
    assert page.locator("header.topbar a.brand").count() == 1  # the site's own layout
    shot(page, "error-404")
    # A page URL with a malformed id is a missing page too, not a JSON validation error.
    _login(page, base)
    response = page.goto(f"{base}/submissions/not-a-number")
    assert response.status == 404 and page.locator("h1").inner_text() == "Not found"
    # A participant on an organiser page: 403 as a page, and no "Organise" menu to get there.
    response = page.goto(f"{base}/manage/challenges/test-challenge")
    assert response.status == 403 and page.locator("h1").inner_text() == "Not allowed"
    assert page.locator("nav >> text=Organise").count() == 0
    shot(page, "error-403")
    # API clients keep JSON, whatever the browser asks for.
    response = page.goto(f"{base}/api/no-such-endpoint")
    assert response.status == 404
    assert response.json() == {"detail": "Not Found"}
    favicon = httpx.get(f"{base}/favicon.ico")
    assert favicon.status_code == 200 and favicon.headers["content-type"] == "image/svg+xml"
    page.close()


def test_docs_load_without_internet(site: Site, browser: Any) -> None:
    page = browser.new_page()
    own = site.base_url.split("/")[2]
    loaded: set[str] = set()
    refused: dict[str, str] = {}
    page.on("requestfinished", lambda r: loaded.add(r.url.split("/")[2]))
    page.on("requestfailed", lambda r: refused.update({r.url: r.failure or ""}))
    page.goto(f"{site.base_url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "SynthArena" in page.locator(".swagger-ui .info .title").inner_text()
    shot(page, "swagger-ui")
    page.goto(f"{site.base_url}/redoc")
    page.wait_for_selector("h1", timeout=30_000)
    assert "SynthArena" in page.locator("h1").first.inner_text()
    page.wait_for_timeout(1000)  # let late requests (logos, badges) start
    assert loaded == {own}, loaded  # everything came from this server
    # ReDoc's vendor logo (a CDN image) is refused by the page's policy, not fetched.
    assert all(why == "csp" for why in refused.values()), refused
    shot(page, "redoc")
    page.close()


def _set_progress(submission_id: int, status: str, done: int, step: str) -> None:
    """What the worker's transitions write: status, counts, current step."""
    from backend.db import session_scope
    from backend.models import Submission, SubmissionStatus

    with session_scope() as s:
        sub = s.get(Submission, submission_id)
        assert sub is not None
        sub.status = SubmissionStatus(status)
        sub.cases_total, sub.cases_done, sub.current_step = 3, done, step


def test_phase_page_badges_follow_the_submission(site: Site, browser: Any) -> None:
    page = browser.new_page()
    _login(page, site.base_url)
    page.goto(f"{site.base_url}/challenges/test-challenge/{site.phase_slug}")
    badge = page.locator(f"#status-{site.submission_id} .badge")
    assert badge.inner_text().strip() == "Queued"
    assert "StatusView" not in page.content()  # the object, not its repr
    _set_progress(site.submission_id, "running", 1, "running cases (1 of 3 done)")
    page.wait_for_function(
        "id => document.querySelector('#status-' + id + ' .badge')"
        ".textContent.includes('Running case 2 of 3')", arg=site.submission_id, timeout=15_000)
    shot(page, "phase-badge-running")
    _set_progress(site.submission_id, "succeeded", 3, "done")
    page.wait_for_function(
        "id => document.querySelector('#status-' + id + ' .badge').textContent.trim() == 'Done'",
        arg=site.submission_id, timeout=15_000)
    # Finished: the widget stops polling.
    assert page.locator(f"#status-{site.submission_id}[hx-get]").count() == 0
    page.close()


def test_upload_replaces_the_empty_image_choice(site: Site, browser: Any,
                                                tmp_path: Path) -> None:
    from tests.backend.tarballs import make_image_tar

    page = browser.new_page()
    register(page, site.base_url, "newcomer", "newcomer@example.org")
    page.goto(f"{site.base_url}/challenges/test-challenge")
    page.click("button:has-text('Join this challenge')")
    page.goto(f"{site.base_url}/challenges/test-challenge/{site.phase_slug}")
    assert page.locator("#image_id option").all_inner_texts() == ["Upload an image first"]
    drop_file(page, ".dropzone", make_image_tar(tmp_path / "algo.tar"))
    page.wait_for_selector("text=is valid and ready to submit", timeout=60_000)
    options = page.locator("#image_id option").all_inner_texts()
    assert options == ["algo.tar (just uploaded)"], options
    assert page.eval_on_selector("#image_id", "s => s.value") != ""
    shot(page, "phase-after-upload")
    page.close()


def test_per_case_table_fits_the_page(site: Site, browser: Any) -> None:
    """Every metric a dose phase reports, in a 1280 px window: labels, not keys; no sideways
    scrolling; times on one line."""
    from backend.db import session_scope
    from backend.models import AggregateResult, CaseRunStatus, Result, Submission, SubmissionStatus
    from backend.submissions.pipeline import ensure_case_runs

    metrics = {"mae": 61.5, "psnr": 29.1, "ms_ssim": 0.93, "ssim": 0.91, "dice": 0.8,
               "hd95": 3.2, "mae_target_photon": 0.012, "dvh_photon": 1.5,
               "gamma_photon": 98.5, "mae_target_proton": 0.02, "dvh_proton": 2.5,
               "gamma_proton": 96.0, "dice_air": 0.9, "dice_bone": 0.85, "hd95_bone": 2.5,
               "hd95_air": 4.0}
    with session_scope() as s:
        # Alice's second submission to the site's phase, with her first one's image.
        first = s.get(Submission, site.submission_id)
        assert first is not None
        sub = Submission(phase_id=first.phase_id, user_id=first.user_id, image_id=first.image_id,
                         status=SubmissionStatus.SUCCEEDED)
        s.add(sub)
        s.flush()
        for run in ensure_case_runs(s, sub):
            run.status, run.duration_s = CaseRunStatus.SUCCEEDED, 754.0
            s.add(Result(submission_id=sub.id, case_id=run.case_id, metrics=metrics))
        s.add(AggregateResult(submission_id=sub.id, metrics=metrics, statistics={},
                              cases_scored=3))
        s.flush()
        sub_id = sub.id
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _login(page, site.base_url)
    page.goto(f"{site.base_url}/submissions/{sub_id}")
    heads = page.locator("#cases thead th").all_inner_texts()
    assert any(h.startswith("Dice (air)") for h in heads), heads
    assert not any("_" in h for h in heads), heads  # no raw keys such as dice_air
    wrap = page.eval_on_selector("#cases", "t => { const w = t.closest('.table-wrap');"
                                           " return [w.scrollWidth, w.clientWidth]; }")
    assert wrap[0] <= wrap[1] + 1, wrap  # nothing to scroll sideways
    heights = page.eval_on_selector_all(
        "#cases tbody td:nth-child(3)", "tds => tds.map(td => td.getClientRects().length"
        " && td.scrollHeight)")
    line = page.eval_on_selector("#cases tbody td:first-child", "td => td.scrollHeight")
    assert all(h == line for h in heights), (heights, line)  # "13 min" on one line
    shot(page, "per-case-table")
    page.close()


def test_an_organiser_uploads_a_dataset_archive_from_the_datasets_page(
        site: Site, browser: Any, tmp_path: Path) -> None:
    """Drop an archive onto a dataset's panel: it is uploaded (the resumable protocol), the
    import is queued with it, and the page shows the import (no worker runs here)."""
    from sqlalchemy import select

    from backend.db import session_scope
    from backend.models import (
        Challenge,
        ChallengeMember,
        ChallengeRole,
        Dataset,
        ImportJob,
        ImportStatus,
    )
    from backend.security import hash_password
    from backend.storage import data_storage
    from tests.backend.test_import_sources import _dataset_tree, _tar_gz

    with session_scope() as s:
        challenge = s.scalar(select(Challenge).where(Challenge.slug == "test-challenge"))
        assert challenge is not None
        orga = harness.user(s, "orga")
        orga.password_hash = hash_password(PASSWORD)
        s.add(ChallengeMember(challenge_id=challenge.id, user_id=orga.id,
                              role=ChallengeRole.ORGANIZER))
        s.add(Dataset(slug="archive-drop", title="Archive drop", challenge_id=challenge.id,
                      created_by_id=orga.id))
    archive = tmp_path / "pelvis.tar.gz"
    archive.write_bytes(_tar_gz(_dataset_tree(tmp_path / "src")))
    page = browser.new_page()
    page.goto(f"{site.base_url}/login")
    page.fill("#username", "orga")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.base_url}/")
    page.goto(f"{site.base_url}/manage/datasets")
    panel = "[data-dataset='archive-drop']"
    page.click(f"{panel} summary")
    page.fill(f"{panel} [data-uploader] input[name=note]", "from the browser")
    drop_file(page, f"{panel} .dropzone", archive)
    # The page reloads once the import is queued and shows its status.
    page.wait_for_selector(f"{panel} [data-import-status=queued]", timeout=60_000)
    assert "archive:pelvis.tar.gz" in page.inner_text(panel)
    shot(page, "datasets-archive-queued")
    with session_scope() as s:
        job = s.scalar(select(ImportJob).join(Dataset, Dataset.id == ImportJob.dataset_id)
                       .where(Dataset.slug == "archive-drop"))
        assert job is not None and job.status is ImportStatus.QUEUED
        assert job.source == "archive:pelvis.tar.gz" and job.note == "from the browser"
        key = job.spec["key"]
    # Moved into the data storage by the request, for whichever worker runs the import.
    assert key.startswith("imports/") and data_storage().exists(key)
    page.close()
