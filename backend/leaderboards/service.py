"""Per-phase leaderboards, computed when they change and stored (``leaderboard_snapshots``).

Everything that changes what a phase's leaderboard shows calls ``invalidate`` in its own
transaction: the phase's ``leaderboard_version`` goes up and ``leaderboards.recompute`` is
enqueued after the commit. A read compares the stored snapshot's version with the phase's
(one query); a missing or stale snapshot is recomputed by the reader once, under the same
row lock as the worker's recomputation, so reads are right even without a worker and a
read never sees half a leaderboard.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from backend import access
from backend.config import settings
from backend.db import session_scope
from backend.errors import ForbiddenError
from backend.leaderboards import cache, document
from backend.leaderboards import repository as repo
from backend.leaderboards.cache import Stored
from backend.leaderboards.document import columns_of
from backend.leaderboards.ranking import number
from backend.leaderboards.schemas import (
    ColumnOut,
    Leaderboard,
    LeaderboardRow,
    PairSignificance,
)
from backend.models import (
    Challenge,
    LeaderboardSnapshot,
    Phase,
    RankingMethod,
    User,
    utcnow,
)
from backend.tasks_client import enqueue_after_commit

# Up to this many ranked teams the bootstrap (a few tenths of a second) is part of every
# recomputation, a reader's too; above, the worker adds it afterwards.
INLINE_INTERVAL_TEAMS = 100


def invalidate(session: Session, phase_id: int) -> None:
    """The phase's leaderboard changes in this transaction: bump its version and recompute
    it after the commit."""
    repo.bump_version(session, phase_id)
    cache.forget(phase_id)
    enqueue_after_commit(session, "leaderboards.recompute", [phase_id])


def refresh(session: Session, phase_id: int) -> Stored:
    """Recompute the phase's ranks unless its snapshot is current, under the snapshot's row
    lock (held until the caller's transaction ends: concurrent recomputations of one phase
    serialise and the later ones find it current). Rank ranges follow (``recompute``)."""
    snap = repo.lock_snapshot(session, phase_id)
    # Read after the lock: the version names every change whose data this computation sees.
    version = repo.phase_version(session, phase_id)
    if snap.version == version and snap.etag:
        return cache.remember_document(phase_id, Stored(snap.etag, snap.document))
    phase = session.get(Phase, phase_id, populate_existing=True)
    assert phase is not None
    doc = document.compute(session, phase, version)
    if doc["intervals_pending"] and doc["ranked"] <= INLINE_INTERVAL_TEAMS:
        doc = document.with_intervals(doc, document.intervals(session, phase, doc))
    return _store(session, snap, version, doc)


def _store(session: Session, snap: LeaderboardSnapshot, version: int,
           doc: dict[str, Any]) -> Stored:
    snap.version, snap.etag, snap.document = version, document.etag_of(doc), doc
    snap.computed_at = utcnow()
    session.flush()
    cache.forget(snap.phase_id)
    return cache.remember_document(snap.phase_id, Stored(snap.etag, doc))


def recompute(phase_id: int) -> None:
    """``leaderboards.recompute``: the ranks (as a reader would), then the bootstrap rank
    ranges, computed without the lock (seconds at thousands of teams) and stored only if the
    snapshot is still the one they were computed for; else a later task does it."""
    with session_scope() as s:
        if repo.snapshot_state(s, phase_id) is None:
            return  # the phase was deleted since
        current = refresh(s, phase_id)
    if not current.doc.get("intervals_pending"):
        return
    with session_scope() as s:
        phase = s.get(Phase, phase_id)
        if phase is None:
            return
        found = document.intervals(s, phase, current.doc)
    with session_scope() as s:
        snap = repo.lock_snapshot(s, phase_id)
        if snap.etag == current.etag and snap.version == current.doc["version"]:
            _store(s, snap, snap.version, document.with_intervals(snap.document, found))


def stored(session: Session, phase_id: int) -> Stored:
    """The phase's current leaderboard document (read-through)."""
    state = repo.snapshot_state(session, phase_id)
    if state is not None and state.version == state.phase_version and state.etag:
        cached = cache.document(phase_id, state.etag)
        if cached is not None:
            return cached
        with cache.loading(phase_id):
            cached = cache.document(phase_id, state.etag)  # loaded while this one waited
            if cached is not None:
                return cached
            found = repo.document(session, phase_id)
            if found is not None and found[0] == state.etag:
                return cache.remember_document(phase_id, Stored(*found))
    return refresh(session, phase_id)


def require_visible(session: Session, user: User | None, challenge: Challenge,
                    phase: Phase) -> None:
    if not phase.leaderboard_public and not access.is_organizer(session, user, challenge.id):
        raise ForbiddenError("The leaderboard of this phase is hidden until the organisers "
                             "publish it.")


def board(session: Session, user: User | None, challenge: Challenge, phase: Phase) -> Stored:
    """The stored leaderboard, where the viewer may see it."""
    require_visible(session, user, challenge, phase)
    return stored(session, phase.id)


def _row_out(row: dict[str, Any]) -> LeaderboardRow:
    iv = row.get("interval")
    return LeaderboardRow(
        rank=row["rank"], username=row["username"], submission_id=row["submission_id"],
        created_at=datetime.fromisoformat(row["created_at"]), is_baseline=row["is_baseline"],
        is_disqualified=row["is_disqualified"], score=row["score"],
        values={k: number(v) for k, v in row["values"].items()},
        ranks=row["ranks"], cases=row.get("cases", 0),
        rank_interval=None if iv is None else (iv[0], iv[1]),
        significant_vs_next=row.get("significant_vs_next"),
    )


def to_schema(challenge: Challenge, phase: Phase, found: Stored, offset: int = 0,
              limit: int | None = None) -> Leaderboard:
    rows = found.doc["rows"]
    page = rows[offset:] if limit is None else rows[offset:offset + limit]
    # The tests of this page's rows against their next ranked row (all of them: ~6 per team,
    # which made a 100-row page of a 2,000-team board 1.6 MB).
    on_page = {r["submission_id"] for r in page}
    return Leaderboard(
        challenge=challenge.slug,
        phase=phase.slug,
        ranking_method=RankingMethod(found.doc["ranking_method"]),
        columns=[ColumnOut(**c) for c in found.doc["columns"]],
        rows=[_row_out(r) for r in page],
        significance=[PairSignificance(**p) for p in found.doc.get("significance", [])
                      if p.get("p_value") is not None and p.get("p_holm") is not None
                      and p["upper_submission_id"] in on_page],
        total=len(rows),
        offset=offset,
        limit=limit,
    )


@dataclass(frozen=True)
class JsonPage:
    etag: str
    body: bytes
    public: bool  # anyone may read it: the same bytes for every viewer


def json_page(session: Session, user: User | None, challenge: Challenge, phase: Phase,
              offset: int, limit: int) -> JsonPage:
    """One page of the leaderboard as JSON with its ETag; a public one is kept for anonymous
    readers (``cached_page``)."""
    found = board(session, user, challenge, phase)
    etag = f'"{found.etag}-{offset}-{limit}"'
    public = phase.leaderboard_public and access.can_view(session, None, challenge)
    key = (challenge.slug, phase.slug, offset, limit)
    # A public page is the same bytes for every viewer: built once per version.
    body = cache.body(key, etag) if public else None
    if body is None:
        body = to_schema(challenge, phase, found, offset, limit).model_dump_json().encode()
    if public:
        cache.remember_page(key, phase.id, etag, body)
    return JsonPage(etag, body, public)


def cached_page(slug: str, phase_slug: str, offset: int, limit: int) -> JsonPage | None:
    """A public page checked against the database within ``leaderboard_cache_s``."""
    hit = cache.page((slug, phase_slug, offset, limit), settings.leaderboard_cache_s)
    return None if hit is None else JsonPage(hit.etag, hit.body, True)


def release_cached_page(slug: str, phase_slug: str, offset: int, limit: int) -> None:
    """End this request's claim to confirm the kept page (:func:`cache.page`), if any."""
    cache.release((slug, phase_slug, offset, limit))


def build(session: Session, user: User | None, challenge: Challenge, phase: Phase) -> (
    Leaderboard
):
    """The whole leaderboard (CSV, scripts)."""
    return to_schema(challenge, phase, board(session, user, challenge, phase))


def to_csv(board: Leaderboard) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    metrics = [c.metric for c in board.columns]
    writer.writerow(
        ["rank", "username", "submission_id", "created_at", "baseline", "disqualified",
         "score", *metrics, *(f"{m}_rank" for m in metrics), "significant_vs_next",
         "p_holm_vs_next"]
    )
    p_next: dict[int, float] = {}
    for p in board.significance:  # the smallest adjusted p over the pair's metrics
        p_next[p.upper_submission_id] = min(p.p_holm, p_next.get(p.upper_submission_id, 1.0))
    for r in board.rows:
        writer.writerow(
            [r.rank if r.rank is not None else "", r.username, r.submission_id,
             r.created_at.isoformat(), int(r.is_baseline), int(r.is_disqualified),
             "" if r.score is None else r.score,
             *("" if r.values[m] is None else r.values[m] for m in metrics),
             *("" if r.ranks[m] is None else r.ranks[m] for m in metrics),
             "" if r.significant_vs_next is None else int(r.significant_vs_next),
             p_next.get(r.submission_id, "")]
        )
    return buf.getvalue()


__all__ = ["RankingMethod", "build", "columns_of", "invalidate", "recompute", "refresh",
           "stored", "to_csv"]
