"""Engine and session factory. The request (or task) scope commits; services never do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from backend.config import settings

T = TypeVar("T")


def make_engine(url: str, echo: bool = False) -> Engine:
    kwargs: dict[str, Any] = {"echo": echo, "future": True}
    pool = {"pool_size": settings.database_pool_size,
            "max_overflow": settings.database_max_overflow,
            "pool_timeout": settings.database_pool_timeout_s}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if ":memory:" not in url and url.removeprefix("sqlite://").removeprefix("/"):
            kwargs.update(pool)  # a file database has a QueuePool: size it like PostgreSQL's
    else:
        kwargs.update(pool, pool_pre_ping=True,
                      connect_args={"connect_timeout": settings.database_connect_timeout_s})
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///"):
            from pathlib import Path

            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(settings.database_url, settings.database_echo)


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


# Tests point this at sessions joined to their rolled-back transaction.
session_factory_override: Callable[[], Session] | None = None


def new_session() -> Session:
    if session_factory_override is not None:
        return session_factory_override()
    return get_sessionmaker()()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work for tasks and scripts: commit on success, roll back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# Per event loop (API process): the requests that may hold a database session at once.
_request_slots: RunVar[tuple[anyio.Semaphore, int]] = RunVar("syntharena_db_request_slots")


def request_slot_count() -> int:
    """``api_db_requests``, kept below the request thread pool and within the connection pool.

    FastAPI runs each sync dependency, the endpoint and the response validation as separate
    thread-pool calls, and a request keeps its connection (and its row locks, e.g. the user
    lock of a submission) from its first query until the commit after the response is built.
    Without a bound, a burst fills the threads with requests waiting for a connection (or for
    a row lock) while the requests holding them wait for a thread; nothing moves until the
    pool times out (a 503). With fewer sessions than threads, a request that holds one always
    gets a thread, and with no more sessions than connections it never waits for the pool."""
    threads = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
    pool = settings.database_pool_size + settings.database_max_overflow
    return max(1, min(settings.api_db_requests, threads - 1, pool))


def _slots() -> tuple[anyio.Semaphore, int]:
    try:
        return _request_slots.get()
    except LookupError:
        n = request_slot_count()
        _request_slots.set((anyio.Semaphore(n), n))
        return _request_slots.get()


async def _off_loop(fn: Callable[[], object]) -> None:
    """Commit, roll back or close in a thread, to the end even if the request is cancelled
    (else the connection would leak). Its own limiter: ending a request must never wait for a
    thread of the request pool."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(fn, limiter=anyio.CapacityLimiter(1))


async def get_session() -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request, committed before the response is sent.

    The request first waits (without a thread or a connection) for one of the process's
    database slots, up to ``database_pool_timeout_s``; then a 503 says nothing was saved."""
    slots, n = _slots()
    try:
        with anyio.fail_after(settings.database_pool_timeout_s):
            await slots.acquire()
    except TimeoutError:
        raise sa_exc.TimeoutError(
            f"no database slot free within {settings.database_pool_timeout_s:g} s "
            f"({n} requests at a time per API process)"
        ) from None
    try:
        session = new_session()
        try:
            yield session
        except BaseException:
            await _off_loop(lambda: _end(session, commit=False))
            raise
        await _off_loop(lambda: _end(session, commit=True))
    finally:
        slots.release()


def _end(session: Session, *, commit: bool) -> None:
    """Commit (or roll back) and close in one thread-pool call: each call costs a request
    ~0.5-1 CPU ms of thread hand-over under load (measured: 2 calls -> 1)."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
_request_session = asynccontextmanager(get_session)


async def in_request_session(work: Callable[[Session], T]) -> T:
    """``work`` on a request's session (``get_session``) in one thread-pool call, committed
    after it: for async routes on hot read paths, where each sync dependency would cost the
    request another thread hop."""
    async with _request_session() as session:
        return await anyio.to_thread.run_sync(lambda: work(session))
