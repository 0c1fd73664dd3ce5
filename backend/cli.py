"""`syntharena`: the command-line client (participants and organisers).

The server URL and API token are kept in ~/.config/syntharena/config.json (mode 0600);
unfinished uploads in uploads.json next to it, so `upload` resumes after an interruption.
Output goes through ``backend.cli_output``: server text is printed verbatim, never as markup.
"""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import httpx
import typer
from rich.progress import BarColumn, Progress, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from backend.cli_output import (
    BinaryDownloadColumn,
    BinarySpeedColumn,
    FriendlyGroup,
    Part,
    console,
    fail,
    say,
    server_url,
    size,
)

# No locals in a traceback: they would include the API token.
app = typer.Typer(help="SynthArena: upload algorithm images, submit, follow the leaderboard.",
                  no_args_is_help=True, cls=FriendlyGroup, pretty_exceptions_show_locals=False)
challenge_app = typer.Typer(help="Organisers: challenges.", no_args_is_help=True)
phase_app = typer.Typer(help="Organisers: phases.", no_args_is_help=True)
dataset_app = typer.Typer(help="Organisers: hidden datasets.", no_args_is_help=True)
app.add_typer(challenge_app, name="challenge")
app.add_typer(phase_app, name="phase")
app.add_typer(dataset_app, name="dataset")
server_app = typer.Typer(help="On the server machine: database and accounts (no HTTP).",
                         no_args_is_help=True)
app.add_typer(server_app, name="server")

ChallengeArg = Annotated[str, typer.Argument(help="challenge slug, e.g. synthrad2025-task1")]
PhaseArg = Annotated[str, typer.Argument(help="phase slug, e.g. validation")]
LOGIN_HINT = "Run `syntharena login --server URL` first."

# Bytes per request (the server's limit is larger): few enough requests that their fixed cost
# is small, and the server keeps what arrived of an interrupted one.
CHUNK = 128 * 1024 * 1024
PIECE = 1024 * 1024  # bytes read from the file and sent at a time
SUBMIT_ATTEMPTS = 4
TERMINAL = {"succeeded", "failed", "cancelled"}


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "syntharena"


def _read(name: str) -> dict[str, Any]:
    path = config_dir() / name
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(name: str, data: dict[str, Any]) -> None:
    path = config_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.chmod(stat.S_IRUSR | stat.S_IWUSR)  # it holds a secret token
    tmp.replace(path)


def make_client(server: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server, headers=headers, timeout=httpx.Timeout(60, read=3600))


def client() -> httpx.Client:
    cfg = _read("config.json")
    if "server" not in cfg:
        raise fail("Not logged in. ", LOGIN_HINT, code=2)
    return make_client(server_url(cfg["server"]), cfg.get("token"))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                           for d in detail if isinstance(d, dict))
    return " ".join(str(detail).split())[:2000]  # one line, whatever the server sent


def check(response: httpx.Response) -> Any:
    if response.status_code == 401:
        detail = _detail(response)
        hint = "" if "syntharena login" in detail else " Run `syntharena login`."
        raise fail("Not logged in: ", detail + hint)
    if response.status_code >= 400:
        raise fail(f"Error {response.status_code}: ", _detail(response))
    return response.json() if response.content else None


@app.command()
def login(
    server: Annotated[str, typer.Option(
        help="e.g. https://arena.example.org (default: the last one, else "
             "http://127.0.0.1:8000)")] = "",
    # No default: a prompt reads "Username:", not "Username []:".
    username: Annotated[str | None, typer.Option(prompt=True, help="your username")] = None,
    password: Annotated[str | None, typer.Option(prompt=True, hide_input=True,
                                                 help="prompted for when not given")] = None,
) -> None:
    """Log in and store an API token in ~/.config/syntharena."""
    server = server_url(server or _read("config.json").get("server")
                        or "http://127.0.0.1:8000")
    with make_client(server, None) as c:
        body = check(c.post("/api/auth/tokens", json={
            "username": username, "password": password, "name": "cli"}))
    _write("config.json", {"server": server, "token": body["token"]})
    say(f"Logged in to {server} as ", (username or "", "bold"), ".")


@app.command()
def logout() -> None:
    """Forget the stored token."""
    cfg = _read("config.json")
    cfg.pop("token", None)
    _write("config.json", cfg)
    say("Logged out.")


@app.command()
def whoami() -> None:
    """Show the account you are logged in as."""
    with client() as c:
        me = check(c.get("/api/auth/me"))
    say(f"{me['username']} <{me['email']}>" + (" (admin)" if me["is_admin"] else ""))


@app.command()
def register(challenge: ChallengeArg) -> None:
    """Join a challenge as a participant."""
    with client() as c:
        check(c.post(f"/api/challenges/{challenge}/register"))
    say(f"Registered for {challenge}.")


def _upload_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="the `docker save` tarball")],
    name: Annotated[str | None, typer.Option(help="Shown in listings; default: file name")]
    = None,
    chunk_kib: Annotated[int, typer.Option(min=1, help="Chunk size in KiB")] = CHUNK // 1024,
) -> None:
    """Upload a `docker save` tarball (plain, .gz or .xz); resumes an interrupted upload."""
    with client() as c:
        upload_id, key = _upload_file(c, path, name or path.name, "image", chunk_kib * 1024)
        say("Validating the image on the server…")
        image = check(c.post(f"/api/images/uploads/{upload_id}/complete"))
    _forget_upload(key)
    if image.get("notice"):
        say((str(image["notice"]), "yellow"))
    colour = "green" if image["status"] == "valid" else "red"
    say(f"Image #{image['id']} ", (str(image["status"]), colour), ": ",
        _message_after(str(image["status"]), image.get("validation_message") or ""))
    if image["status"] != "valid":
        raise typer.Exit(1)


def _upload_file(c: httpx.Client, path: Path, name: str, purpose: str,
                 chunk: int) -> tuple[str, str]:
    """Send ``path`` as a resumable upload (resuming an interrupted one of the same file):
    ``(upload id, resume key)``; forget the key once the upload is used."""
    file_size = path.stat().st_size
    key = f"{purpose}:{_upload_key(path)}"
    pending = _read("uploads.json")
    upload_id = pending.get(key)
    offset = 0
    body: dict[str, Any] = {}
    if upload_id:
        r = c.get(f"/api/images/uploads/{upload_id}")
        if r.status_code == 200 and r.json()["status"] == "open":
            body = r.json()
            offset = body["received_bytes"]
            say(f"Resuming upload at {size(offset)} of {size(file_size)}.")
        else:
            upload_id = None
    if not upload_id:
        body = check(c.post("/api/images/uploads", json={"name": name, "size_bytes": file_size,
                                                         "purpose": purpose}))
        upload_id = body["id"]
        pending[key] = upload_id
        _write("uploads.json", pending)
    _send(c, path, upload_id, offset, file_size, min(chunk, body.get("max_chunk_bytes") or chunk))
    return upload_id, key


def _forget_upload(key: str) -> None:
    pending = _read("uploads.json")
    pending.pop(key, None)
    _write("uploads.json", pending)


def _message_after(status: str, message: str) -> str:
    """The validation message without a leading repeat of the status ("valid: Valid: …")."""
    head, sep, rest = message.partition(":")
    return rest.strip() if sep and head.strip().lower() == status.lower() else message


def _send(c: httpx.Client, path: Path, upload_id: str, offset: int, size: int,
          chunk: int) -> None:
    columns = (BarColumn(), BinaryDownloadColumn(), BinarySpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress, path.open("rb") as f:
        task = progress.add_task("upload", total=size, completed=offset)
        failures = 0
        while offset < size:
            end = min(offset + chunk, size) - 1
            try:
                r = c.put(f"/api/images/uploads/{upload_id}",
                          content=_file_range(f, offset, end - offset + 1),
                          headers={"Content-Range": f"bytes {offset}-{end}/{size}",
                                   "Content-Length": str(end - offset + 1),
                                   "Content-Type": "application/octet-stream"})
            except httpx.TransportError as exc:
                failures += 1
                if failures > 5:
                    raise fail(f"Connection lost ({exc}). ",
                               "Run the same command again to resume.") from exc
                time.sleep(min(2**failures, 30))
                r = c.get(f"/api/images/uploads/{upload_id}")
            if r.status_code == 409:  # server has a different offset: ask and resume there
                r = c.get(f"/api/images/uploads/{upload_id}")
            body = check(r)
            offset = body["received_bytes"]
            progress.update(task, completed=offset)


def _file_range(f: BinaryIO, offset: int, length: int) -> Iterator[bytes]:
    """Bytes ``offset`` .. ``offset+length`` of ``f`` in pieces of at most ``PIECE``: memory
    stays flat whatever the chunk size, and each piece goes out in a few socket sends (one
    large bytes body is re-copied after every partial send by httpx's sync transport)."""
    f.seek(offset)
    while length > 0:
        data = f.read(min(PIECE, length))
        if not data:
            raise fail(f"{f.name} is shorter than when the upload started; upload it again.")
        length -= len(data)
        yield data


@app.command()
def images() -> None:
    """List your images."""
    with client() as c:
        rows = check(c.get("/api/images"))
    table = Table("id", "name", "status", "size", "message")
    for i in rows:
        status = str(i["status"])
        table.add_row(str(i["id"]), str(i["name"]), status, size(i["size_bytes"]),
                      _message_after(status, i["validation_message"] or ""))
    console.print(table)


@app.command()
def submit(challenge: ChallengeArg, phase: PhaseArg,
           image_id: Annotated[int, typer.Argument(help="from `syntharena images`")],
           comment: Annotated[str, typer.Option(help="shown to you and the organisers")] = "",
           watch: Annotated[bool, typer.Option(help="Follow it until it finishes")] = False
           ) -> None:
    """Submit an uploaded image to a phase."""
    # A dropped connection leaves the outcome unknown: the repeat carries the same key, so
    # the server answers with the submission the first attempt made instead of a second one.
    key = str(uuid.uuid4())
    with client() as c:
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                r = c.post(f"/api/challenges/{challenge}/phases/{phase}/submissions",
                           json={"image_id": image_id, "comment": comment},
                           headers={"Idempotency-Key": key})
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol):
                raise  # never reached the server: nothing was made (one line, FriendlyGroup)
            except httpx.TransportError as exc:
                if attempt == SUBMIT_ATTEMPTS:
                    raise fail(f"Connection lost ({exc}); `syntharena submissions "
                               f"{challenge} {phase}` shows whether it was made.") from exc
                time.sleep(min(2**attempt, 30))
        sub = check(r)
    say(f"Submission #{sub['id']} created ({sub['status']}).")
    if watch:
        status(sub["id"], watch=True)


def _show(sub: dict[str, Any]) -> Text:
    parts: list[Part] = [f"#{sub['id']} {sub['status']}  {sub['cases_done']}/"
                         f"{sub['cases_total']} cases  {sub['current_step'] or ''}"]
    if sub.get("error_message"):
        parts += ["  ", (" ".join(str(sub["error_message"]).split()), "red")]
    if sub.get("metrics"):
        parts.append("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in sub["metrics"].items()))
    return Text.assemble(*parts)


@app.command()
def status(submission_id: Annotated[int, typer.Argument(help="the submission's number")],
           watch: Annotated[bool, typer.Option(help="Poll until it finishes")] = False,
           interval: Annotated[float, typer.Option(help="seconds between polls")] = 5.0
           ) -> None:
    """Show (or follow) a submission's progress."""
    with client() as c:
        while True:
            sub = check(c.get(f"/api/submissions/{submission_id}"))
            console.print(_show(sub))
            if not watch or sub["status"] in TERMINAL:
                break
            time.sleep(interval)
    if sub["status"] == "failed":
        raise typer.Exit(1)


@app.command()
def submissions(challenge: ChallengeArg, phase: PhaseArg) -> None:
    """List your submissions in a phase (organisers: all of them)."""
    with client() as c:
        for sub in check(c.get(f"/api/challenges/{challenge}/phases/{phase}/submissions")):
            console.print(_show(sub))


@app.command()
def leaderboard(challenge: ChallengeArg, phase: PhaseArg,
                csv: Annotated[bool, typer.Option("--csv", help="Print CSV")] = False) -> None:
    """Show a phase's leaderboard."""
    with client() as c:
        base = f"/api/challenges/{challenge}/phases/{phase}/leaderboard"
        if csv:
            r = c.get(base + ".csv")
            if r.status_code >= 400:
                check(r)
            typer.echo(r.text, nl=False)
            return
        board = check(c.get(base))
    table = Table("rank", "user", "submission")
    for col in board["columns"]:
        table.add_column(str(col["label"]), justify="right")
    for row in board["rows"]:
        rank = str(row["rank"]) if row["rank"] is not None else (
            "baseline" if row["is_baseline"] else "DQ" if row["is_disqualified"] else "–")
        values = [("–" if row["values"][col["metric"]] is None
                   else f"{row['values'][col['metric']]:.4g}") for col in board["columns"]]
        table.add_row(rank, str(row["username"]), f"#{row['submission_id']}", *values)
    console.print(table)
    total = int(board.get("total") or 0)
    if total > len(board["rows"]):
        say(f"The first {len(board['rows'])} of {total} rows; `--csv` prints them all.")


@challenge_app.command("create")
def challenge_create(slug: Annotated[str, typer.Argument(help="short id used in URLs")],
                     title: Annotated[str, typer.Argument(help="shown on the pages")],
                     description: Annotated[str, typer.Option(help="Markdown-free text")] = "",
                     private: Annotated[bool, typer.Option(help="invite-only")] = False
                     ) -> None:
    """Create a challenge (site administrators)."""
    with client() as c:
        check(c.post("/api/challenges", json={"slug": slug, "title": title,
                                              "description": description,
                                              "is_public": not private}))
    say(f"Challenge {slug} created.")


def _settings(options: dict[str, Any], extra: list[str]) -> dict[str, Any]:
    body = {k: v for k, v in options.items() if v is not None}
    for item in extra:
        key, _, raw = item.partition("=")
        try:
            body[key] = json.loads(raw)
        except ValueError:
            body[key] = raw
    return body


@phase_app.command("create")
def phase_create(
    challenge: ChallengeArg,
    slug: Annotated[str, typer.Argument(help="the new phase's slug")],
    title: Annotated[str, typer.Option(help="default: the slug")] = "",
    kind: Annotated[str, typer.Option(help="debug | validation | test")] = "validation",
    dataset: Annotated[str | None, typer.Option(help="dataset slug")] = None,
    open_: Annotated[bool, typer.Option("--open/--closed")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="any phase setting as key=JSON, e.g. --set gpu_required=true")] = None,
) -> None:
    """Create a phase of a challenge you organise."""
    body = _settings({"slug": slug, "title": title or slug, "kind": kind, "dataset": dataset,
                      "is_open": open_}, set_ or [])
    with client() as c:
        check(c.post(f"/api/challenges/{challenge}/phases", json=body))
    say(f"Phase {challenge}/{slug} created.")


@phase_app.command("update")
def phase_update(
    challenge: ChallengeArg, slug: PhaseArg,
    set_: Annotated[list[str], typer.Option("--set", help="key=JSON, e.g. is_open=false")],
) -> None:
    """Change settings of a phase (only the keys given)."""
    with client() as c:
        check(c.patch(f"/api/challenges/{challenge}/phases/{slug}", json=_settings({}, set_)))
    say(f"Phase {challenge}/{slug} updated.")


@dataset_app.command("create")
def dataset_create(
    slug: Annotated[str, typer.Argument(help="short id, e.g. brain-val")],
    title: Annotated[str, typer.Argument(help="shown to organisers")],
    challenge: Annotated[str | None, typer.Option(
        help="the challenge it belongs to (required unless you are a site admin)")] = None,
) -> None:
    """Create an empty hidden dataset; add cases with `dataset import`."""
    with client() as c:
        check(c.post("/api/datasets", json={"slug": slug, "title": title,
                                            "challenge": challenge}))
    say(f"Dataset {slug} created.")


@dataset_app.command("import")
def dataset_import(
    slug: Annotated[str, typer.Argument(help="the dataset's slug")],
    synthrad: Annotated[str | None, typer.Option(help="SynthRAD folder on the server")] = None,
    archive: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, readable=True,
        help="a .tar, .tar.gz, .tgz or .zip of a SynthRAD-layout folder on this machine: "
             "uploaded (resumable), then imported on the server")] = None,
    s3: Annotated[str | None, typer.Option(
        help="s3://BUCKET/PREFIX/ holding the SynthRAD layout (read by the server)")] = None,
    phantom: Annotated[str | None, typer.Option(
        help="phantom region: brain | pelvis | head_neck | thorax | abdomen")] = None,
    task: Annotated[str, typer.Option(help="phantom task: mri | cbct")] = "mri",
    cases: Annotated[int, typer.Option(help="phantom cases to generate")] = 4,
    seed: Annotated[int, typer.Option(help="phantom random seed")] = 0,
    phantom_size: Annotated[str, typer.Option(
        "--size", help="phantom size: small | medium | realistic")] = "small",
    plans: Annotated[bool, typer.Option(help="phantom: also write treatment plans")] = False,
    note: Annotated[str, typer.Option(help="kept with the version")] = "",
    wait: Annotated[bool, typer.Option(help="Show progress until the import ends")] = True,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
) -> None:
    """Import a new version from a SynthRAD-layout folder on the server, an archive uploaded from
    here, an S3 prefix or the phantom generator; the server imports in the background, this
    shows its progress (--no-wait: queue it and return)."""
    if sum(x is not None for x in (synthrad, phantom, archive, s3)) != 1:
        raise fail("Give exactly one of --synthrad PATH, --archive FILE, --s3 URL or "
                   "--phantom ANATOMY.", code=2)
    body: dict[str, Any] = (
        {"source": "synthrad", "path": synthrad, "note": note} if synthrad
        else {"source": "s3", "path": s3, "note": note} if s3
        else {"source": "archive", "note": note} if archive
        else {"source": "phantom", "anatomy": phantom, "task": task, "cases": cases,
              "seed": seed, "size": phantom_size, "plans": plans, "note": note})
    with client() as c:
        upload_key = None
        if archive is not None:
            body["upload_id"], upload_key = _upload_file(c, archive, archive.name, "dataset",
                                                         CHUNK)
        job = check(c.post(f"/api/datasets/{slug}/imports", json=body))
        if upload_key is not None:
            _forget_upload(upload_key)
        say(f"Import {job['id']} of {slug} queued.")
        if not wait:
            say(f"Follow it with `syntharena dataset import-status {slug} {job['id']} --watch`.")
            return
        _follow_import(c, slug, job, interval)


@dataset_app.command("import-status")
def dataset_import_status(
    slug: Annotated[str, typer.Argument(help="the dataset's slug")],
    job_id: Annotated[int, typer.Argument(help="the import's number")],
    watch: Annotated[bool, typer.Option(help="Poll until it ends")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
) -> None:
    """Show (or follow) a background import's progress."""
    with client() as c:
        job = check(c.get(f"/api/datasets/{slug}/imports/{job_id}"))
        if watch:
            _follow_import(c, slug, job, interval)
        else:
            say(_import_line(job))
            if job["status"] == "failed":
                raise typer.Exit(1)


def _import_line(job: dict[str, Any]) -> str:
    total = "?" if job["cases_total"] is None else job["cases_total"]
    line = (f"{job['status']}: case {job['cases_done']}/{total}, {size(job['bytes_done'])}, "
            f"{len(job['errors'])} errors")
    return line + (f". {job['message']}" if job["message"] else "")


def _follow_import(c: httpx.Client, slug: str, job: dict[str, Any], interval: float) -> None:
    """One line per change of progress until the job ends; exit 1 when it failed."""
    shown = ""
    while True:
        line = _import_line(job)
        if line != shown:
            say(line)
            shown = line
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(interval)
        job = check(c.get(f"/api/datasets/{slug}/imports/{job['id']}"))
    for error in job["errors"]:
        say((f"  {error['case']}: ", "red"), error["error"], to_err=True)
    if job["status"] == "failed":
        raise typer.Exit(1)
    say(f"Dataset {slug} version {job['version']}: {job['cases_done']} cases.")


@server_app.command("migrate")
def server_migrate() -> None:
    """Bring the database (SYNTHARENA_DATABASE_URL; default SQLite) to the latest schema."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[1]
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    command.upgrade(cfg, "head")
    say("Database is up to date.")


@server_app.command("create-user")
def server_create_user(
    email: Annotated[str, typer.Argument(help="the account's e-mail address")],
    username: Annotated[str, typer.Argument(help="the login name")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                          confirmation_prompt=True,
                                          help="prompted for when not given")],
    admin: Annotated[bool, typer.Option(help="Make a site administrator")] = False,
) -> None:
    """Create an account directly in the database (e.g. the first administrator)."""
    from backend.auth.schemas import RegisterIn
    from backend.auth.service import register as register_user
    from backend.config import settings
    from backend.db import session_scope
    from backend.errors import AppError

    try:
        with session_scope() as session:
            allowed, settings.allow_registration = settings.allow_registration, True
            try:
                user = register_user(session, RegisterIn(email=email, username=username,
                                                         password=password))
            finally:
                settings.allow_registration = allowed
            user.is_admin = user.is_admin or admin
    except AppError as exc:
        raise fail(exc.message) from exc
    say(f"User {username} created{' (admin)' if admin else ''}.")


# uvicorn's supervisor (--workers > 1) kills a worker process whose health ping is not
# answered within 5 s by default: on a few busy cores (a burst of submissions) that killed
# workers mid-request and reset their connections; a hung worker is still replaced, later.
WORKER_HEALTHCHECK_S = 60


@server_app.command("serve")
def server_serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Run the API (and web pages) with uvicorn."""
    import uvicorn

    uvicorn.run("backend.main:app", host=host, port=port, workers=workers,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)


def main() -> None:
    app()
