"""Response bodies kept per viewer in this process, valid while the state they were built
from holds.

A caller reads the *state* of what a response is built from — a tuple of row versions read
from the database in one query, before building — and ``Kept`` hands a body out again only
for an equal state, so a change anywhere the response depends on rebuilds it at the next
request. The state must also cover everything the access checks read: a body built for a
state passed those checks in it. Bounded by bytes, least recently used first out. Each API
process keeps its own; the database decides for all of them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta

from fastapi import Request

_EPOCH, _US = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)


def etag(state: tuple[object, ...], salt: str = "") -> str:
    """A weak ETag of a body built for ``state`` (``salt``: what else is in the body). Equal
    states give equal tags whichever connection read them: a time is written as its instant
    (one driver hands out UTC as ``timezone.utc``, another as ``ZoneInfo("Etc/UTC")``)."""
    text = repr(tuple(_instant(v) if isinstance(v, datetime) else v for v in state))
    return 'W/"' + hashlib.blake2b(f"{text}|{salt}".encode(), digest_size=12).hexdigest() + '"'


def _instant(t: datetime) -> int:
    """Microseconds since the epoch (a time without a zone is UTC, as SQLite keeps them)."""
    return ((t if t.tzinfo else t.replace(tzinfo=UTC)) - _EPOCH) // _US


def not_modified(request: Request, tag: str) -> bool:
    """Whether the request's If-None-Match names ``tag`` or is ``*`` (weak comparison, as
    RFC 9110 asks for If-None-Match)."""
    given = request.headers.get("if-none-match", "")
    bare = tag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") in (bare, "*") for t in given.split(","))


class Kept:
    """Bodies by key (route, object, viewer, ...), each with the state it was built from."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._pages: OrderedDict[Hashable, tuple[Hashable, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, state: Hashable) -> bytes | None:
        with self._lock:
            found = self._pages.get(key)
            if found is None or found[0] != state:
                return None
            self._pages.move_to_end(key)
            return found[1]

    def put(self, key: Hashable, state: Hashable, body: bytes) -> None:
        if len(body) > self.max_bytes // 8:  # one huge page does not push out the rest
            return
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._pages[key] = (state, body)
            self._bytes += len(body)
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._pages.popitem(last=False)
                self._bytes -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._pages)
