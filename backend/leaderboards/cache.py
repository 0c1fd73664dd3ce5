"""Process-local caches of stored leaderboards (each API process keeps its own).

``documents``: the parsed document of each phase by ETag, so a read whose snapshot is
unchanged skips loading and decoding it. ``pages``: the serialised JSON pages of public
leaderboards, served to anonymous readers without the database for up to
``settings.leaderboard_cache_s``; ``forget`` drops a phase's pages when this process changes
its leaderboard. ``loading``: one load of a phase's document at a time per process, so a
crowd of readers arriving after a change waits for one decode instead of each doing its own.
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
    with _lock:
        found = _pages.get(key)
    if found is None or time.monotonic() - found.checked > max_age_s:
        return None
    return found


def body(key: PageKey, etag: str) -> bytes | None:
    """A kept page's bytes if it is of the leaderboard version ``etag`` (already confirmed by
    the caller), whatever its age."""
    with _lock:
        found = _pages.get(key)
    return found.body if found is not None and found.etag == etag else None


def remember_page(key: PageKey, phase_id: int, etag: str, body: bytes) -> None:
    with _lock:
        _pages[key] = Page(phase_id, etag, body, time.monotonic())
        _pages.move_to_end(key)
        while len(_pages) > _MAX_PAGES:
            _pages.popitem(last=False)


def forget(phase_id: int) -> None:
    with _lock:
        for key in [k for k, p in _pages.items() if p.phase_id == phase_id]:
            del _pages[key]
