"""`syntharena`: the command-line client (participants and organisers).

The server URL and API token are kept in ~/.config/syntharena/config.json (mode 0600);
unfinished uploads in uploads.json next to it, so `upload` resumes after an interruption.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

app = typer.Typer(help="SynthArena: upload algorithm images, submit, follow the leaderboard.",
                  no_args_is_help=True)
challenge_app = typer.Typer(help="Organisers: challenges.", no_args_is_help=True)
phase_app = typer.Typer(help="Organisers: phases.", no_args_is_help=True)
dataset_app = typer.Typer(help="Organisers: hidden datasets.", no_args_is_help=True)
app.add_typer(challenge_app, name="challenge")
app.add_typer(phase_app, name="phase")
app.add_typer(dataset_app, name="dataset")
server_app = typer.Typer(help="On the server machine: database and accounts (no HTTP).",
                         no_args_is_help=True)
app.add_typer(server_app, name="server")
console = Console()
err = Console(stderr=True)

CHUNK = 16 * 1024 * 1024
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
        err.print("[red]Not logged in.[/] Run `syntharena login --server URL` first.")
        raise typer.Exit(2)
    return make_client(cfg["server"], cfg.get("token"))


def check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                               for d in detail)
        err.print(f"[red]Error {response.status_code}:[/] {detail}")
        raise typer.Exit(1)
    return response.json() if response.content else None


@app.command()
def login(
    server: Annotated[str, typer.Option(help="e.g. https://arena.example.org")] = "",
    username: Annotated[str, typer.Option(prompt=True)] = "",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)] = "",
) -> None:
    """Log in and store an API token in ~/.config/syntharena."""
    server = (server or _read("config.json").get("server") or "http://127.0.0.1:8000")
    server = server.rstrip("/")
    with make_client(server, None) as c:
        body = check(c.post("/api/auth/tokens", json={
            "username": username, "password": password, "name": "cli"}))
    _write("config.json", {"server": server, "token": body["token"]})
    console.print(f"Logged in to {server} as [bold]{username}[/].")


@app.command()
def logout() -> None:
    """Forget the stored token."""
    cfg = _read("config.json")
    cfg.pop("token", None)
    _write("config.json", cfg)
    console.print("Logged out.")


@app.command()
def whoami() -> None:
    with client() as c:
        me = check(c.get("/api/auth/me"))
    console.print(f"{me['username']} <{me['email']}>" + (" (admin)" if me["is_admin"] else ""))


@app.command()
def register(challenge: str) -> None:
    """Join a challenge as a participant."""
    with client() as c:
        check(c.post(f"/api/challenges/{challenge}/register"))
    console.print(f"Registered for {challenge}.")


def _upload_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


@app.command()
def upload(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str | None, typer.Option(help="Shown in listings; default: file name")]
    = None,
    chunk_kib: Annotated[int, typer.Option(min=1, help="Chunk size in KiB")] = CHUNK // 1024,
) -> None:
    """Upload a `docker save` tarball (plain, .gz or .xz); resumes an interrupted upload."""
    size = path.stat().st_size
    key = _upload_key(path)
    pending = _read("uploads.json")
    with client() as c:
        upload_id = pending.get(key)
        offset = 0
        if upload_id:
            r = c.get(f"/api/images/uploads/{upload_id}")
            if r.status_code == 200 and r.json()["status"] == "open":
                offset = r.json()["received_bytes"]
                console.print(f"Resuming upload at {offset / 2**20:.1f} MiB.")
            else:
                upload_id = None
        if not upload_id:
            body = check(c.post("/api/images/uploads",
                                json={"name": name or path.name, "size_bytes": size}))
            upload_id = body["id"]
            pending[key] = upload_id
            _write("uploads.json", pending)
        chunk = chunk_kib * 1024
        _send(c, path, upload_id, offset, size, chunk)
        console.print("Validating the image on the server…")
        image = check(c.post(f"/api/images/uploads/{upload_id}/complete"))
    pending.pop(key, None)
    _write("uploads.json", pending)
    if image.get("notice"):
        console.print(f"[yellow]{image['notice']}[/]")
    colour = "green" if image["status"] == "valid" else "red"
    console.print(f"Image #{image['id']} [{colour}]{image['status']}[/]: "
                  f"{image['validation_message']}")
    if image["status"] != "valid":
        raise typer.Exit(1)


def _send(c: httpx.Client, path: Path, upload_id: str, offset: int, size: int,
          chunk: int) -> None:
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress, path.open("rb") as f:
        task = progress.add_task("upload", total=size, completed=offset)
        failures = 0
        while offset < size:
            f.seek(offset)
            data = f.read(min(chunk, size - offset))
            end = offset + len(data) - 1
            try:
                r = c.put(f"/api/images/uploads/{upload_id}", content=data,
                          headers={"Content-Range": f"bytes {offset}-{end}/{size}",
                                   "Content-Type": "application/octet-stream"})
            except httpx.TransportError as exc:
                failures += 1
                if failures > 5:
                    err.print(f"[red]Connection lost ({exc}).[/] Run the same command again "
                              "to resume.")
                    raise typer.Exit(1) from exc
                time.sleep(min(2**failures, 30))
                r = c.get(f"/api/images/uploads/{upload_id}")
            if r.status_code == 409:  # server has a different offset: ask and resume there
                r = c.get(f"/api/images/uploads/{upload_id}")
            body = check(r)
            offset = body["received_bytes"]
            progress.update(task, completed=offset)


@app.command()
def images() -> None:
    """List your images."""
    with client() as c:
        rows = check(c.get("/api/images"))
    table = Table("id", "name", "status", "size", "message")
    for i in rows:
        table.add_row(str(i["id"]), i["name"], i["status"], f"{i['size_bytes'] / 2**20:.1f} MiB",
                      i["validation_message"])
    console.print(table)


@app.command()
def submit(challenge: str, phase: str, image_id: int,
           comment: Annotated[str, typer.Option()] = "",
           watch: Annotated[bool, typer.Option(help="Follow it until it finishes")] = False
           ) -> None:
    """Submit an uploaded image to a phase."""
    with client() as c:
        sub = check(c.post(f"/api/challenges/{challenge}/phases/{phase}/submissions",
                           json={"image_id": image_id, "comment": comment}))
    console.print(f"Submission #{sub['id']} created ({sub['status']}).")
    if watch:
        status(sub["id"], watch=True)


def _show(sub: dict[str, Any]) -> str:
    line = (f"#{sub['id']} {sub['status']}  {sub['cases_done']}/{sub['cases_total']} cases  "
            f"{sub['current_step']}")
    if sub.get("error_message"):
        line += f"  [red]{sub['error_message']}[/]"
    if sub.get("metrics"):
        line += "  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in sub["metrics"].items())
    return line


@app.command()
def status(submission_id: int,
           watch: Annotated[bool, typer.Option(help="Poll until it finishes")] = False,
           interval: Annotated[float, typer.Option()] = 5.0) -> None:
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
def submissions(challenge: str, phase: str) -> None:
    """List your submissions in a phase (organisers: all of them)."""
    with client() as c:
        for sub in check(c.get(f"/api/challenges/{challenge}/phases/{phase}/submissions")):
            console.print(_show(sub))


@app.command()
def leaderboard(challenge: str, phase: str,
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
    table = Table("rank", "user", "submission", *(col["label"] for col in board["columns"]))
    for row in board["rows"]:
        rank = str(row["rank"]) if row["rank"] is not None else (
            "baseline" if row["is_baseline"] else "DQ" if row["is_disqualified"] else "–")
        values = [("–" if row["values"][col["metric"]] is None
                   else f"{row['values'][col['metric']]:.4g}") for col in board["columns"]]
        table.add_row(rank, row["username"], f"#{row['submission_id']}", *values)
    console.print(table)


@challenge_app.command("create")
def challenge_create(slug: str, title: str,
                     description: Annotated[str, typer.Option()] = "",
                     private: Annotated[bool, typer.Option()] = False) -> None:
    with client() as c:
        check(c.post("/api/challenges", json={"slug": slug, "title": title,
                                              "description": description,
                                              "is_public": not private}))
    console.print(f"Challenge {slug} created.")


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
    challenge: str, slug: str,
    title: Annotated[str, typer.Option()] = "",
    kind: Annotated[str, typer.Option(help="debug | validation | test")] = "validation",
    dataset: Annotated[str | None, typer.Option(help="dataset slug")] = None,
    open_: Annotated[bool, typer.Option("--open/--closed")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="any phase setting as key=JSON, e.g. --set gpu_required=true")] = None,
) -> None:
    body = _settings({"slug": slug, "title": title or slug, "kind": kind, "dataset": dataset,
                      "is_open": open_}, set_ or [])
    with client() as c:
        check(c.post(f"/api/challenges/{challenge}/phases", json=body))
    console.print(f"Phase {challenge}/{slug} created.")


@phase_app.command("update")
def phase_update(
    challenge: str, slug: str,
    set_: Annotated[list[str], typer.Option("--set", help="key=JSON")],
) -> None:
    with client() as c:
        check(c.patch(f"/api/challenges/{challenge}/phases/{slug}", json=_settings({}, set_)))
    console.print(f"Phase {challenge}/{slug} updated.")


@dataset_app.command("create")
def dataset_create(slug: str, title: str,
                   challenge: Annotated[str | None, typer.Option()] = None) -> None:
    with client() as c:
        check(c.post("/api/datasets", json={"slug": slug, "title": title,
                                            "challenge": challenge}))
    console.print(f"Dataset {slug} created.")


@dataset_app.command("import")
def dataset_import(
    slug: str,
    synthrad: Annotated[str | None, typer.Option(help="SynthRAD folder on the server")] = None,
    phantom: Annotated[str | None, typer.Option(help="phantom anatomy: brain | pelvis")] = None,
    cases: Annotated[int, typer.Option()] = 4,
    seed: Annotated[int, typer.Option()] = 0,
    note: Annotated[str, typer.Option()] = "",
) -> None:
    """Import a new version from a SynthRAD-layout folder or the phantom generator."""
    if (synthrad is None) == (phantom is None):
        err.print("[red]Give exactly one of --synthrad PATH or --phantom ANATOMY.[/]")
        raise typer.Exit(2)
    body: dict[str, Any] = (
        {"source": "synthrad", "path": synthrad, "note": note} if synthrad
        else {"source": "phantom", "anatomy": phantom, "cases": cases, "seed": seed,
              "note": note})
    with client() as c:
        v = check(c.post(f"/api/datasets/{slug}/versions", json=body))
    console.print(f"Dataset {slug} version {v['version']}: {v['case_count']} cases.")


@server_app.command("migrate")
def server_migrate() -> None:
    """Bring the database (SYNTHARENA_DATABASE_URL; default SQLite) to the latest schema."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[1]
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    command.upgrade(cfg, "head")
    console.print("Database is up to date.")


@server_app.command("create-user")
def server_create_user(
    email: str, username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True,
                                          confirmation_prompt=True)],
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
        err.print(f"[red]{exc.message}[/]")
        raise typer.Exit(1) from exc
    console.print(f"User {username} created{' (admin)' if admin else ''}.")


# uvicorn's supervisor (--workers > 1) kills a worker process whose health ping is not
# answered within 5 s by default: on a few busy cores (a burst of submissions) that killed
# workers mid-request and reset their connections; a hung worker is still replaced, later.
WORKER_HEALTHCHECK_S = 60


@server_app.command("serve")
def server_serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the API (and web pages) with uvicorn."""
    import uvicorn

    uvicorn.run("backend.main:app", host=host, port=port, workers=workers,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)


def main() -> None:
    app()
