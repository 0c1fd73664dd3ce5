"""The kept answers' read path on the event loop: no thread-pool call, no ORM.

A request for a kept answer (``backend.kept``: a submission's page, its status widget, its
API answer) needs two things from the database — who the viewer is and the state of what the
answer shows — and nothing else when the kept body is still valid. Through the thread pool
and the ORM that cost ~3.8 CPU ms a request (thread hand-overs, session set-up) for ~0.3 ms
of SQL. Here both are read over an async connection of a small per-process pool
(SQLAlchemy's asyncio engine on psycopg), in the event loop.

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

from anyio.lowlevel import RunVar
from fastapi import Request
from sqlalchemy import bindparam, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

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
from backend.models import ApiToken, User, utcnow
from backend.security import token_digest
from backend.submissions import repository as submissions_repo
from backend.submissions.repository import Viewer

log = logging.getLogger(__name__)

# Tests that commit their rows point the lane at their database; None: settings.database_url.
url_override: str | None = None
_engines: RunVar[AsyncEngine | None] = RunVar("syntharena_kept_lane_engine")

_BY_TOKEN = (
    select(ApiToken.revoked_at, ApiToken.expires_at, ApiToken.last_used_at, User.id,
           User.is_active, User.is_admin, User.updated_at)
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("digest"))
)
_BY_ID = select(User.id, User.is_active, User.is_admin, User.updated_at,
                User.password_hash).where(User.id == bindparam("user_id"))


def _engine() -> AsyncEngine | None:
    """This event loop's engine (async connections belong to their loop); None where the
    lane is off: SQLite, or tests whose sessions see rows no other connection does."""
    try:
        return _engines.get()
    except LookupError:
        pass
    url = url_override or settings.database_url
    engine = None
    if url_override or (url.startswith("postgresql+psycopg")
                        and db.session_factory_override is None):
        # Autocommit and no pre-ping: two statements, two round trips (a transaction and a
        # ping were three more). A broken connection fails a read, which falls back to the
        # usual path, and is replaced.
        engine = create_async_engine(
            url, pool_size=8, max_overflow=8, pool_timeout=1, isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": settings.database_connect_timeout_s})
    _engines.set(engine)
    return engine


async def submission_state(request: Request, submission_id: int) -> tuple[Viewer,
                                                                         tuple[Any, ...]] | None:
    """The viewer and the state ``submissions.service.view_state`` would give (the same
    tuple), or None: the usual path answers."""
    engine = _engine()
    if engine is None:
        return None
    try:
        async with engine.connect() as conn:
            viewer = None
            token = bearer_token(request)
            if token is not None:
                row = (await conn.execute(_BY_TOKEN, {"digest": token_digest(token)})).first()
                now = utcnow()
                if row is not None and row.is_active and token_live(
                        row.revoked_at, row.expires_at, now) and not token_use_due(
                        row.last_used_at, now):
                    viewer = Viewer(row.id, row.is_admin, row.updated_at)
            elif (parsed := session_user_id(request)) is not None:
                user = (await conn.execute(_BY_ID, {"user_id": parsed[0]})).first()
                if user is not None and session_matches(user.is_active, user.password_hash,
                                                        parsed[1]):
                    viewer = Viewer(user.id, user.is_admin, user.updated_at)
            if viewer is None:
                return None
            state = await submissions_repo.view_state_async(conn, submission_id, viewer)
    except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as exc:  # the usual path decides
        log.debug("kept lane: %s", exc)
        return None
    return None if state is None else (viewer, state)


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
