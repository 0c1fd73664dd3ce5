"""Process-local caches of stored leaderboards (each API process keeps its own).

``documents``: the parsed document of each phase by ETag, so a read whose snapshot is
unchanged skips loading and decoding it. ``pages``: the serialised JSON pages of public
leaderboards, served to anonymous readers without the database for up to
``settings.leaderboard_cache_s``; ``forget`` drops a phase's pages when this process changes
its leaderboard. ``loading``: one load of a phase's document at a time per process, so a
crowd of readers arriving after a change waits for one decode instead of each doing its own.
A kept page that is due for confirmation is confirmed by one request of the process at a
time (``page`` hands it out as a claim); the others meanwhile get the page as last confirmed
(stale-while-revalidate): a crowd reading a page the moment it turns stale no longer rebuilds
it all at once (measured: p99 1.2 s for the HTML page at 32 connections).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_MAX_DOCUMENTS, _MAX_PAGES = 256, 1024


@dataclass(frozen=True)
class Stored:
    etag: str
    doc: dict[str, Any]


@dataclass(frozen=True)
class Page:
    phase_id: int
    etag: str
    body: bytes
    checked: float  # time.monotonic() when the database last confirmed it


PageKey = tuple[str | int, ...]
_documents: OrderedDict[int, Stored] = OrderedDict()
_pages: OrderedDict[PageKey, Page] = OrderedDict()


_loading: dict[int, threading.Lock] = {}
# key -> time.monotonic() when a request of this process set out to confirm that page; a claim
# older than CLAIM_S (its request failed or hangs) no longer holds the others back
_claims: dict[PageKey, float] = {}
CLAIM_S = 10.0


def loading(phase_id: int) -> threading.Lock:
    """The lock that serialises loading the phase's document in this process."""
    with _lock:
        return _loading.setdefault(phase_id, threading.Lock())


def document(phase_id: int, etag: str) -> Stored | None:
    with _lock:
        found = _documents.get(phase_id)
    return found if found is not None and found.etag == etag else None


def remember_document(phase_id: int, stored: Stored) -> Stored:
    with _lock:
        _documents[phase_id] = stored
        _documents.move_to_end(phase_id)
        while len(_documents) > _MAX_DOCUMENTS:
            _documents.popitem(last=False)
    return stored


def page(key: PageKey, max_age_s: float) -> Page | None:
    """The kept page if the database confirmed it within ``max_age_s``, or if it is older but
    another request of this process is confirming it right now (see the module docstring).
    None: the caller builds the page — and holds the claim to confirm it when there was one,
    which ``remember_page`` (or ``release``, on failure) ends."""
    now = time.monotonic()
    with _lock:
        found = _pages.get(key)
        if found is None or now - found.checked <= max_age_s:
            return found
        claimed = _claims.get(key)
        if claimed is not None and now - claimed < CLAIM_S:
            return found
        _claims[key] = now
    return None


def release(key: PageKey) -> None:
    """End a claim to confirm the page (``page``) without a new version of it."""
    with _lock:
        _claims.pop(key, None)


def body(key: PageKey, etag: str) -> bytes | None:
    """A kept page's bytes if it is of the leaderboard version ``etag`` (already confirmed by
    the caller), whatever its age."""
    with _lock:
        found = _pages.get(key)
    return found.body if found is not None and found.etag == etag else None


def remember_page(key: PageKey, phase_id: int, etag: str, body: bytes) -> None:
    with _lock:
        _claims.pop(key, None)
        _pages[key] = Page(phase_id, etag, body, time.monotonic())
        _pages.move_to_end(key)
        while len(_pages) > _MAX_PAGES:
            _pages.popitem(last=False)


def forget(phase_id: int) -> None:
    with _lock:
        for key in [k for k, p in _pages.items() if p.phase_id == phase_id]:
            del _pages[key]
