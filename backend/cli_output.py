"""How the `syntharena` CLI writes to the terminal.

Everything it prints may hold text the server passed on from an algorithm or another user
(image names, validation and error messages, comments, usernames, metric labels). Rich
reads ``[...]`` in a plain string as markup and ``:name:`` as an emoji, so crafted text
could restyle the output or crash the command (``[/]`` closes a tag that is not open). The
consoles therefore never parse markup; styles are applied to ``Text`` parts instead.
"""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text
from typer.core import TyperGroup

# soft_wrap: a message stays one line (the terminal wraps it), never broken by rich.
console = Console(markup=False, emoji=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)

Part = str | tuple[str, str]  # plain text, or (text, style)


def say(*parts: Part, to_err: bool = False) -> None:
    """Print parts verbatim; a (text, style) pair is styled, never parsed."""
    (err if to_err else console).print(Text.assemble(*parts))


def fail(*parts: Part, code: int = 1) -> typer.Exit:
    """Print a one-line error (red head) and return the Exit to raise."""
    head, *rest = parts
    say((head, "red") if isinstance(head, str) else head, *rest, to_err=True)
    return typer.Exit(code)


def size(n: float | None) -> str:
    """Bytes in binary units (KiB, MiB, GiB), as the web pages show them."""
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class BinaryDownloadColumn(ProgressColumn):
    """"12.0 MiB / 1.2 GiB", in the same units as every other size the CLI prints."""

    def render(self, task: Task) -> Text:
        return Text(f"{size(task.completed)} / {size(task.total)}", style="progress.download")


class BinarySpeedColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{size(speed)}/s", style="progress.data.speed")


def server_url(raw: str) -> str:
    """The server's base URL, or a one-line error when it lacks http:// or https://."""
    url = raw.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise fail("Error: ", f"the server address {url!r} needs its scheme and host, e.g. "
                   "`--server https://arena.example.org` or `--server http://127.0.0.1:8000`.",
                   code=2)
    return url


def network_error(exc: httpx.HTTPError, server: str) -> str:
    """One line for a request that got no HTTP answer."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return (f"The server address is not a usable URL ({exc}); give it with its scheme: "
                "`syntharena login --server https://arena.example.org`.")
    if isinstance(exc, httpx.ConnectError):
        return (f"Cannot reach the server at {server} ({exc}). Is it running, and is the "
                "address right? Change it with `syntharena login --server URL`.")
    if isinstance(exc, httpx.TimeoutException):
        return f"The server at {server} did not answer in time; try again in a moment."
    return f"The request to {server} failed ({type(exc).__name__}: {exc}); try again."


class FriendlyGroup(TyperGroup):
    """Runs every (sub)command; a request that got no HTTP answer (server down, bad
    address) ends with one line on stderr and exit code 1 instead of a traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except httpx.HTTPError as exc:
            try:
                url = exc.request.url
                server = f"{url.scheme}://{url.netloc.decode()}"
            except RuntimeError:  # no request attached
                server = "the server"
            raise fail("Error: ", network_error(exc, server)) from None
