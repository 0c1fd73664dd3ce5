"""The kept answers' read path on the event loop: no thread-pool call, no ORM, one query.

A request for a kept answer (``backend.kept``: a submission's page, its status widget, its
API answer) needs two things from the database — who the viewer is and the state of what the
answer shows — and nothing else when the kept body is still valid. Through the thread pool
and the ORM that cost ~3.8 CPU ms a request (thread hand-overs, session set-up) for ~0.3 ms
of SQL. Here both are one prepared statement (``submissions.repository.viewer_state_sql``)
over a connection of a small per-process pool (psycopg's own asyncio pool), in the event
loop: ~1 CPU ms less again than two statements through SQLAlchemy's asyncio layer.

The lane only answers what it can answer plainly: a signed-in viewer (a live API token whose
use was recorded within the last minute, or a session cookie of an active user with an
unchanged password) and a state the caller finds kept. Everything else — no credentials, a
token to refuse or to stamp, a kept body that is stale, SQLite, a database error — returns
None, and the route's usual path answers (the one place that raises, writes and builds).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any

import psycopg
from anyio.lowlevel import RunVar
from fastapi import Request
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import make_url

from backend import db
from backend.config import settings
from backend.deps import (
    bearer_token,
    session_matches,
    session_user_id,
    token_live,
    token_use_due,
)
from backend.kept import Kept
from backend.models import utcnow
from backend.security import token_digest
from backend.submissions import repository as submissions_repo
from backend.submissions.repository import STATE_WIDTH, TOKEN_COLUMNS, VIEWER_COLUMNS, Viewer

log = logging.getLogger(__name__)

# Tests that commit their rows point the lane at their database; None: settings.database_url.
url_override: str | None = None
_pools: RunVar[AsyncConnectionPool | None] = RunVar("syntharena_kept_lane_pool")
# How the lane's connections show in pg_stat_activity.
APPLICATION_NAME = "syntharena-kept-lane"
_SQL = {by_token: submissions_repo.viewer_state_sql(by_token) for by_token in (True, False)}
# Where each viewer column is in a row: after the state, the viewer's, then a token's.
_AT = {name: STATE_WIDTH + i for i, name in enumerate(VIEWER_COLUMNS + TOKEN_COLUMNS)}


def _pool() -> AsyncConnectionPool | None:
    """This event loop's pool (async connections belong to their loop); None where the
    lane is off: SQLite, or tests whose sessions see rows no other connection does."""
    try:
        return _pools.get()
    except LookupError:
        pass
    url = url_override or settings.database_url
    pool = None
    if url_override or (url.startswith("postgresql+psycopg")
                        and db.session_factory_override is None):
        # Autocommit: one statement, one round trip. No check on lending: a broken
        # connection fails its read, which falls back to the usual path, and is replaced.
        # A fixed size (no overflow connections opened and closed under load, each a
        # PostgreSQL backend started); a request waits at most a second for one.
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        pool = AsyncConnectionPool(
            conninfo, min_size=4, max_size=4, timeout=1.0, open=False,
            kwargs={"autocommit": True, "connect_timeout": settings.database_connect_timeout_s,
                    "application_name": APPLICATION_NAME})
    _pools.set(pool)
    return pool


async def close() -> None:
    """Closes this event loop's pool, if it has one (the app's shutdown)."""
    try:
        pool = _pools.get()
    except LookupError:
        return
    _pools.set(None)
    if pool is not None and not pool.closed:
        await pool.close()


async def _row(request: Request, submission_id: int) -> tuple[Any, ...] | None:
    token = bearer_token(request)
    parsed = None if token is not None else session_user_id(request)
    params: dict[str, object] = {"submission": submission_id}
    if token is not None:
        params["digest"] = token_digest(token)
    elif parsed is not None:
        params["user_id"] = parsed[0]
    else:
        return None
    by_token = token is not None
    pool = _pool()
    if pool is None:
        return None
    if pool.closed:
        await pool.open(wait=False)
    async with pool.connection() as conn:
        cur = await conn.execute(_SQL[by_token], params, prepare=True)
        row = await cur.fetchone()
    if row is None:
        return None
    now = utcnow()
    if by_token:
        if not (row[_AT["is_active"]]
                and token_live(row[_AT["revoked_at"]], row[_AT["expires_at"]], now)
                and not token_use_due(row[_AT["last_used_at"]], now)):
            return None
    elif parsed is None or not session_matches(row[_AT["is_active"]],
                                               row[_AT["password_hash"]], parsed[1]):
        return None
    return row


async def submission_state(request: Request, submission_id: int) -> tuple[Viewer,
                                                                         tuple[Any, ...]] | None:
    """The viewer and the state ``submissions.service.view_state`` would give (the same
    tuple), or None: the usual path answers."""
    try:
        row = await _row(request, submission_id)
    except (psycopg.Error, PoolTimeout, OSError, TimeoutError) as exc:  # the usual path decides
        log.debug("kept lane: %s", exc)
        return None
    if row is None:
        return None
    viewer = Viewer(row[_AT["id"]], row[_AT["is_admin"]], row[_AT["updated_at"]])
    return viewer, submissions_repo.with_viewer(row[:STATE_WIDTH], viewer)


async def kept_body(request: Request, submission_id: int, store: Kept,
                    *key: Hashable) -> tuple[tuple[Any, ...], bytes] | None:
    """(state, body) of the viewer's kept answer under ``(submission_id, viewer id, *key)``
    in ``store`` when it is current; None: the usual path answers."""
    found = await submission_state(request, submission_id)
    if found is None:
        return None
    viewer, state = found
    body = store.get((submission_id, viewer.id, *key), state)
    return None if body is None else (state, body)
