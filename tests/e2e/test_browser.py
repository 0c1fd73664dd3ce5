"""The web app in a real Chromium against the real stack: uvicorn serving the app, a Celery
worker running algorithm containers in Docker, PostgreSQL and Redis.

A participant registers, joins, drops the example image tarball on the page (the upload loses
its connection once and resumes), submits, watches the status change without reloading and
finds the row on the leaderboard; an organiser creates a phase (a validation error first) and
re-evaluates the submission. Screenshots of the key pages go to test-artifacts/.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.worker import harness

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ORGANIZER_EMAIL = "organizer@example.org"
PASSWORD = "a long enough password"


@dataclass
class Stack:
    base_url: str
    env: harness.PipelineEnv
    tarball: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


@contextmanager
def serve_app(env: dict[str, str], log_name: str) -> Iterator[str]:
    """The app under uvicorn on a free port, its output in test-artifacts/``log_name``; yields
    the base URL once /api/health answers (test_pages_browser shares it)."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = _free_port()
    with open(ARTIFACTS / log_name, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "backend.main:app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            _wait_http(f"http://127.0.0.1:{port}/api/health", server)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=20)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from worker import sandbox

    if not sandbox.ping():
        pytest.fail("No Docker engine: run `source scripts/services.sh; start_docker`.")
    from tests.worker.helpers import EXAMPLES_OUT, ensure_example

    ensure_example("static-c")
    ensure_example("fail-no-output")
    with harness.settings_restored():
        data_dir = tmp_path_factory.mktemp("browser-data")
        env = harness.setup("syntharena_browser_test", data_dir, redis_db=12)
        from backend.db import session_scope

        with session_scope() as s:
            phase = harness.seed_phase(s, data_dir, slug="validation", n_cases=3,
                                       shape=(24, 48, 48), show_case_results=True,
                                       show_case_logs=True, submissions_per_period=5)
            phase.title = "Validation"
            # Another team already on the board, so there is something to compare with.
            harness.submit(s, phase, "rival-team", "static-c")
            # And one whose container writes nothing: its failure must say what to fix.
            harness.submit(s, phase, "broken-team", "fail-no-output")
        ARTIFACTS.mkdir(exist_ok=True)
        worker = harness.start_worker(env, "browser", concurrency=1,
                                      log_path=ARTIFACTS / "browser-worker.log")
        server_env = {**env.env(), "SYNTHARENA_ADMIN_EMAILS": f'["{ORGANIZER_EMAIL}"]',
                      "SYNTHARENA_SECRET_KEY": "browser-test-secret"}
        try:
            with serve_app(server_env, "browser-uvicorn.log") as base_url:
                yield Stack(base_url, env, EXAMPLES_OUT / "static-c.tar.gz")
        finally:
            harness.stop_worker(worker)
            # Only this test's worker's containers: other tests may share the engine.
            sandbox.remove_containers(**{sandbox.LABEL_WORKER: f"browser@{socket.gethostname()}"})


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (test_pages_browser shares it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    with chromium() as b:
        yield b


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def register(page: Any, base: str, username: str, email: str) -> None:
    page.goto(f"{base}/register")
    page.fill("#username", username)
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def drop_file(page: Any, selector: str, path: Path) -> None:
    """A real drop event carrying the file, as a person dragging it onto the page makes."""
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """([selector, name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: "application/gzip"}));
            const zone = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
              zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true,
                                                      cancelable: true}));
            }
        }""",
        [selector, path.name, data],
    )


def test_participant_and_organizer_in_chromium(stack: Stack, browser: Any) -> None:
    base = stack.base_url
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(30_000)
    page = ctx.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda e: page_errors.append(str(e)))

    # -- participant: register, join, open the phase
    page.goto(f"{base}/")
    shot(page, "00-home")
    register(page, base, "alice", "alice@example.org")
    page.click("text=Test challenge")
    page.click("button:has-text('Join this challenge')")
    page.wait_for_selector("text=You joined")
    shot(page, "01-challenge")
    page.click("a.button:has-text('Submit')")
    page.wait_for_selector("[data-uploader]")

    # -- upload by drag and drop; the connection drops once mid-way and the upload resumes
    chunk = 256 * 1024
    page.evaluate(f"document.querySelector('[data-uploader]').uploader.cfg.chunkBytes = {chunk}")
    puts: list[str] = []
    dropped: list[str] = []

    def flaky(route: Any, request: Any) -> None:
        if request.method == "PUT":
            rng = request.headers.get("content-range", "")
            puts.append(rng)
            if rng.startswith(f"bytes {chunk}-") and not dropped:
                dropped.append(rng)
                route.abort("connectionreset")
                return
        route.continue_()

    page.route("**/api/images/uploads/**", flaky)
    drop_file(page, ".dropzone", stack.tarball)
    page.wait_for_selector("text=is valid and ready to submit", timeout=60_000)
    size = stack.tarball.stat().st_size
    assert dropped, puts
    assert puts.count(dropped[0]) == 2, puts  # the lost chunk was sent again, once
    assert not any(p.startswith("bytes 0-") for p in puts[1:]), puts  # never restarted
    assert f"/{size}" in puts[-1]
    assert page.get_attribute(".upload-status .progress", "aria-valuenow") == "100"
    shot(page, "02-upload-validated")

    # -- submit and watch the status change without reloading the page
    page.fill("#comment", "static-c example")
    page.click("[data-testid=submit-button]")
    page.wait_for_url("**/submissions/*")
    sub_url = page.url
    sub_id = int(sub_url.rsplit("/", 1)[1])
    seen: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = page.get_attribute(".status-box", "data-status") or ""
        label = page.inner_text(".status-box .badge").strip()
        if not seen or seen[-1] != label:
            seen.append(label)
            if label.startswith("Running case"):
                shot(page, "03-submission-running")
        if status == "succeeded" and page.query_selector("[data-plot]"):
            break
        if status in ("failed", "cancelled"):
            pytest.fail(f"submission {status}: {page.inner_text('.status-box')}")
        time.sleep(0.25)
    assert seen[-1] == "Done", seen
    assert len(seen) >= 2, seen  # it changed in front of us (queued/running/scoring -> done)
    page.wait_for_selector("[data-plot=distribution] svg")
    page.wait_for_selector("[data-plot=comparison] svg")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.viewer img')].every(i => i.naturalWidth > 0)")
    assert page.locator(".viewer img").count() == 2  # a test phase: no reference CT
    shot(page, "04-submission-detail")

    page.goto(f"{base}/submissions")
    page.wait_for_selector(f"tr[data-submission='{sub_id}'] .badge:has-text('Done')")
    shot(page, "05-my-submissions")

    # -- leaderboard: own row highlighted, sortable, CSV
    page.goto(f"{base}/challenges/test-challenge/validation/leaderboard")
    own = page.locator("tr.own")
    assert own.count() == 1 and "alice" in own.inner_text()
    assert page.locator("#leaderboard tbody tr").count() == 2
    page.click("th[data-key=team]")
    assert page.locator("#leaderboard tbody tr").first.inner_text().startswith(("1", "2"))
    shot(page, "06-leaderboard")
    csv_text = page.request.get(f"{base}/challenges/test-challenge/validation/leaderboard.csv")
    assert "alice" in csv_text.text()
    assert not page_errors, page_errors

    # -- organiser: create a phase (an invalid one first), re-evaluate alice's submission
    org_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    org_ctx.set_default_timeout(30_000)
    org = org_ctx.new_page()
    org.on("dialog", lambda d: d.accept())
    register(org, base, "organizer", ORGANIZER_EMAIL)
    org.goto(f"{base}/manage/challenges/test-challenge/phases/new")
    org.fill("#slug", "final")
    org.fill("#title", "Final test")
    org.select_option("#kind", "test")
    org.fill("#opens_at", "2031-02-01T00:00")
    org.fill("#closes_at", "2031-01-01T00:00")
    org.fill("#submissions_per_period", "-2")
    org.click("button:has-text('Create phase')")
    org.wait_for_selector("[data-error-for=closes_at]")
    assert org.locator("[data-error-for=submissions_per_period]").count() == 1
    shot(org, "07-phase-form-errors")
    org.fill("#closes_at", "2031-03-01T00:00")
    org.fill("#submissions_per_period", "2")
    org.check("input[name=is_open]")
    org.click("button:has-text('Create phase')")
    org.wait_for_selector("text=Phase Final test created")
    shot(org, "08-phase-created")

    org.goto(f"{base}/manage/challenges/test-challenge/submissions")
    broken = org.locator("tr:has-text('broken-team') .error-box")
    assert "No synthetic CT was written" in broken.inner_text()
    assert "/output/images/synthetic-ct/" in broken.inner_text()
    row = org.locator(f"tr[data-submission='{sub_id}']")
    row.locator("button:has-text('Re-evaluate')").click()
    org.wait_for_selector(f"text=Submission #{sub_id} is queued for re-evaluation")
    shot(org, "09-admin-submissions")
    org.goto(f"{base}/submissions/{sub_id}")
    org.wait_for_selector(".status-box[data-status=succeeded]", timeout=180_000)
    org.wait_for_selector("[data-plot=distribution] svg")
    assert org.locator(".viewer img").count() == 4  # organisers also see CT and difference
    org.wait_for_function(
        "() => [...document.querySelectorAll('.viewer img')].every(i => i.naturalWidth > 0)")
    shot(org, "10-organizer-submission-detail")
    org.goto(f"{base}/admin/user/list")
    org.wait_for_selector("text=alice")
    shot(org, "12-admin-users")

    from backend.db import session_scope
    from backend.models import Phase, Submission

    with session_scope() as s:
        sub = s.get(Submission, sub_id)
        assert sub is not None and sub.attempts >= 1 and sub.status.value == "succeeded"
        final = s.query(Phase).filter_by(slug="final").one()
        assert (final.title, final.submissions_per_period, final.is_open) == ("Final test", 2,
                                                                              True)
    # Without JS the leaderboard is the same table.
    nojs = browser.new_context(java_script_enabled=False)
    p = nojs.new_page()
    p.goto(f"{base}/challenges/test-challenge/validation/leaderboard?sort=team&dir=desc")
    assert p.locator("#leaderboard tbody tr").count() == 2
    shot(p, "11-leaderboard-no-js")
    for c in (ctx, org_ctx, nojs):
        c.close()
    assert os.path.exists(ARTIFACTS / "06-leaderboard.png")
