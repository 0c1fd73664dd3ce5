"""The CLI's errors are one line without a traceback, and text from the server (which can
come from an algorithm's output or another user) is printed verbatim, never as rich markup
(issue 15, class 6; issue 18)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from backend import cli
from backend.models import ImageStatus, SubmissionStatus
from tests.backend import factories as f

runner = CliRunner()

# Markup tags, a closing tag with nothing open (rich raises MarkupError on it), a link,
# unbalanced and escaped brackets, a trailing backslash, an emoji code.
PAYLOADS = [
    "[bold]loud[/bold]",
    "[/]",
    "[/bold] closes nothing",
    "[link=https://evil.example]click me[/link]",
    "[red unbalanced",
    "]] stray [[ brackets [",
    r"escaped \[bold] and a trailing backslash \\",
    ":warning: :smile:",
]


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli.app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a crash, not an error message
    return result.exit_code, result.output


def _one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "syntharena"


def test_unreachable_server_is_one_line(config_home: Path) -> None:
    server = f"http://127.0.0.1:{_closed_port()}"
    code, out = _invoke("login", "--server", server, "--username", "u", "--password", "p")
    line = _one_line_error(out)
    assert code == 1 and "Cannot reach the server" in line and server in line
    config_home.mkdir(parents=True)
    (config_home / "config.json").write_text(json.dumps({"server": server, "token": "sa_x"}))
    for args in (["whoami"], ["images"], ["status", "1"], ["leaderboard", "c", "p"]):
        code, out = _invoke(*args)
        assert code == 1 and "Cannot reach the server" in _one_line_error(out), args


@pytest.mark.parametrize("server", ["localhost:8000", "arena.example.org", "ftp://x", "http://"])
def test_server_without_scheme_is_one_line(config_home: Path, server: str) -> None:
    code, out = _invoke("login", "--server", server, "--username", "u", "--password", "p")
    line = _one_line_error(out)
    assert code == 2 and "scheme" in line and "https://" in line


def test_not_logged_in_says_run_login(config_home: Path) -> None:
    code, out = _invoke("images")
    assert code == 2 and "syntharena login" in _one_line_error(out)


def test_rejected_token_says_run_login(cli_env: Path) -> None:
    cfg = cli_env / "config" / "syntharena"
    cfg.mkdir(parents=True)
    (cfg / "config.json").write_text(json.dumps({"server": "http://testserver",
                                                 "token": "sa_not-a-real-token"}))
    code, out = _invoke("whoami")
    assert code == 1 and "syntharena login" in _one_line_error(out)


def test_login_prompts_without_empty_default(config_home: Path) -> None:
    server = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(cli.app, ["login", "--server", server], input="alice\nsecret\n")
    assert "Username:" in result.output and "[]" not in result.output


def test_every_command_has_help() -> None:
    import typer.main

    group = typer.main.get_command(cli.app)
    missing = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(command, "commands", None) or {name: command}
        for sub_name, sub in subs.items():
            if not (sub.help or "").strip():
                missing.append(f"{name} {sub_name}")
    assert not missing, missing
    assert len(group.commands) > 10  # type: ignore[attr-defined]


def test_server_text_is_printed_verbatim(cli_env: Path, db_session: Session) -> None:
    org = f.make_user(db_session)
    ch = f.make_challenge(db_session, org)
    phase = f.make_phase(db_session, ch, f.make_dataset_version(db_session, ch))
    user = f.make_user(db_session)
    f.add_member(db_session, ch, user)
    subs = []
    for payload in PAYLOADS:
        image = f.make_image(db_session, user, status=ImageStatus.INVALID)
        image.name, image.validation_message = payload, f"Invalid: {payload}"
        sub = f.make_submission(db_session, phase, user, image, status=SubmissionStatus.FAILED)
        sub.error_message, sub.current_step = payload, payload
        subs.append(sub)
    db_session.flush()

    _invoke("login", "--server", "http://testserver", "--username", user.username,
            "--password", f.PASSWORD)
    for sub, payload in zip(subs, PAYLOADS, strict=True):
        code, out = _invoke("status", str(sub.id))
        assert code == 1, out  # failed submission: exit 1, not a crash
        assert out.count(payload) == 2, out  # the step and the error, as sent
    code, out = _invoke("images")
    assert code == 0, out
    flat = " ".join(out.split())
    for payload in PAYLOADS:
        assert " ".join(payload.split())[:10] in flat

    # The organiser's listing of everyone's submissions.
    _invoke("login", "--server", "http://testserver", "--username", org.username,
            "--password", f.PASSWORD)
    code, out = _invoke("submissions", ch.slug, phase.slug)
    assert code == 0, out
    for payload in PAYLOADS:
        assert payload in out
    assert "\x1b]8;" not in out  # no terminal hyperlink was made


def test_validation_status_is_not_repeated() -> None:
    assert cli._message_after("valid", "Valid: linux/amd64, runs as user 1000.") == (
        "linux/amd64, runs as user 1000.")
    assert cli._message_after("invalid", "The image runs as root.") == (
        "The image runs as root.")
