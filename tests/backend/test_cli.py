from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from backend import cli
from backend.models import Submission
from tests.backend import factories as f
from tests.backend.imports_inline import run_imports_while_cli_waits
from tests.backend.tarballs import make_image_tar

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_participant_flow(cli_env: Path, db_session: Session,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    phase = f.make_phase(db_session, ch, f.make_dataset_version(db_session, ch))
    user = f.make_user(db_session)
    out = _run("login", "--server", "http://testserver", "--username", user.username,
               "--password", f.PASSWORD)
    assert "Logged in" in out
    cfg = cli_env / "config" / "syntharena" / "config.json"
    assert json.loads(cfg.read_text())["token"].startswith("sa_")
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    assert user.username in _run("whoami")
    _run("register", ch.slug)
    tarball = make_image_tar(cli_env / "algo.tar", payload=b"p" * 5000)

    # Interrupt the first upload after one chunk; the second run resumes.
    calls = {"n": 0}
    real_put = TestClient.put

    def flaky_put(self: TestClient, *a: object, **kw: object) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_put(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TestClient, "put", flaky_put)
    result = runner.invoke(cli.app, ["upload", str(tarball), "--chunk-kib", "4"])
    assert result.exit_code != 0
    monkeypatch.setattr(TestClient, "put", real_put)
    uploads = json.loads((cli_env / "config" / "syntharena" / "uploads.json").read_text())
    assert len(uploads) == 1
    out = _run("upload", str(tarball), "--chunk-kib", "4")
    assert "Resuming upload" in out and "valid" in out
    image_id = int(out.split("Image #")[1].split()[0])
    # The first answer is lost after the server made the submission (mocked: an in-process
    # client cannot drop a connection; tests/reliability/test_load.py meets real ones): the
    # CLI repeats the request with its Idempotency-Key and reports the one submission made.
    real_post, sent_keys = TestClient.post, []

    def answer_lost_once(self: TestClient, url: str, **kw: object) -> httpx.Response:
        r = real_post(self, url, **kw)  # type: ignore[arg-type]
        if url.endswith("/submissions"):
            sent_keys.append(dict(kw["headers"])["Idempotency-Key"])  # type: ignore[call-overload]
            if len(sent_keys) == 1:
                raise httpx.ReadError("connection reset by peer")
        return r

    monkeypatch.setattr(TestClient, "post", answer_lost_once)
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    out = _run("submit", ch.slug, phase.slug, str(image_id))
    monkeypatch.setattr(TestClient, "post", real_post)
    sub_id = int(out.split("#")[1].split()[0])
    assert len(sent_keys) == 2 and sent_keys[0] == sent_keys[1]
    assert db_session.get(Submission, sub_id) is not None
    assert db_session.query(Submission).filter_by(phase_id=phase.id).count() == 1
    assert "pending" in _run("status", str(sub_id))
    assert "rank" in _run("leaderboard", ch.slug, phase.slug)
    assert _run("leaderboard", ch.slug, phase.slug, "--csv").startswith("rank,username")
    bad = runner.invoke(cli.app, ["submit", ch.slug, phase.slug, str(image_id)])
    assert bad.exit_code == 1 and "still pending" in bad.output


def test_organizer_flow(cli_env: Path, db_session: Session,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_imports_while_cli_waits(monkeypatch, db_session)
    admin = f.make_user(db_session, admin=True)
    _run("login", "--server", "http://testserver", "--username", admin.username,
         "--password", f.PASSWORD)
    slug = f"c{f.uid()}"
    _run("challenge", "create", slug, "My challenge")
    _run("dataset", "create", f"d{slug}", "Hidden", "--challenge", slug)
    out = _run("dataset", "import", f"d{slug}", "--phantom", "brain", "--cases", "1",
               "--interval", "0")
    assert "1 cases" in out
    _run("phase", "create", slug, "val", "--dataset", f"d{slug}", "--open",
         "--set", "gpu_required=true", "--set", "batch_size=2")
    _run("phase", "update", slug, "val", "--set", "submissions_per_period=5")
    bad = runner.invoke(cli.app, ["phase", "update", slug, "val", "--set", "memory_mb=1"])
    assert bad.exit_code == 1 and "memory_mb" in bad.output


def test_server_commands(db_session: Session, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.config import settings
    from backend.models import User

    monkeypatch.setattr(settings, "database_url", f"sqlite:///{tmp_path / 'x.db'}")
    assert "up to date" in _run("server", "migrate")
    name = f"root{f.uid()}"
    _run("server", "create-user", f"{name}@example.org", name, "--admin",
         "--password", "a good password")
    from sqlalchemy import select

    user = db_session.scalars(select(User).where(User.username == name)).one()
    assert user.is_admin
    again = runner.invoke(cli.app, ["server", "create-user", f"{name}@example.org", name,
                                    "--password", "a good password"])
    assert again.exit_code == 1 and "already registered" in again.output


def test_upload_keeps_chunks_within_the_servers_limit(
        cli_env: Path, db_session: Session, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's default chunk is larger than this server allows: it sends the server's
    maximum per request instead of getting 413s."""
    from backend.config import settings

    monkeypatch.setattr(settings, "max_upload_chunk_bytes", 4096)
    puts: list[int] = []
    real_put = TestClient.put

    def counting_put(self: TestClient, *a: object, **kw: object) -> httpx.Response:
        puts.append(int(dict(kw["headers"])["Content-Length"]))  # type: ignore[call-overload]
        return real_put(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TestClient, "put", counting_put)
    user = f.make_user(db_session)
    _run("login", "--server", "http://testserver", "--username", user.username,
         "--password", f.PASSWORD)
    tarball = make_image_tar(tmp_path / "algo.tar", payload=b"q" * 20_000)
    out = _run("upload", str(tarball))
    assert "valid" in out
    assert max(puts) == 4096 and sum(puts) == tarball.stat().st_size
