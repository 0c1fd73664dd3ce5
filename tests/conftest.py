"""Shared database fixtures: a real PostgreSQL whose schema is built by the Alembic migrations,
and one transaction per test, rolled back at the end (service code that commits only
releases a SAVEPOINT)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Database libraries are imported inside the fixtures, so the evaluator's tests also run on a
# machine that has only torch/scipy (the GPU machine used for the CUDA checks).
if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

# A test machine: the placeholder secret key is allowed (set before backend.config is imported;
# the pipeline's subprocesses inherit it).
os.environ.setdefault("SYNTHARENA_DEV_MODE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEST_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/syntharena_test"
MIGRATION_LOCK = 727072023  # pg advisory lock: parallel test runs migrate one at a time


def database_url_for_tests() -> str:
    return os.environ.get("SYNTHARENA_TEST_DATABASE_URL", DEFAULT_TEST_URL)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist."""
    from sqlalchemy import create_engine, make_url, text

    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                             {"n": u.database})
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{u.database}"'))
    admin.dispose()


@contextmanager
def scratch_database(name: str) -> Iterator[Connection]:
    """A connection to a fresh PostgreSQL database of its own (dropped afterwards), for tests
    that move the schema up and down: the shared test database may be in use by another run."""
    from sqlalchemy import create_engine, make_url, text

    url = make_url(database_url_for_tests()).set(database=f"syntharena_test_{name}_{os.getpid()}")

    def drop() -> None:
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}"'))
        admin.dispose()

    drop()  # a run killed earlier under the same pid may have left one (at any revision)
    ensure_database(url.render_as_string(hide_password=False))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()
        drop()


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    from alembic import command
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
        conn.commit()
        try:
            command.upgrade(alembic_config(conn), "head")
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()


@pytest.fixture(scope="session")
def db_engine() -> Iterator[Engine]:
    from sqlalchemy import create_engine

    url = database_url_for_tests()
    ensure_database(url)
    engine = create_engine(url, pool_size=20, max_overflow=20)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db_connection(db_engine: Engine) -> Iterator[Connection]:
    conn = db_engine.connect()
    trans = conn.begin()
    yield conn
    trans.rollback()
    conn.close()


@pytest.fixture
def db_session(db_connection: Connection) -> Iterator[Session]:
    """The test's session; ``backend.db.session_scope`` (and so every request) gets sessions
    joined to the same rolled-back transaction."""
    from sqlalchemy.orm import Session

    from backend import db

    def factory() -> Session:
        return Session(bind=db_connection, join_transaction_mode="create_savepoint",
                       expire_on_commit=False)

    session = factory()
    previous = db.session_factory_override
    db.session_factory_override = factory
    yield session
    db.session_factory_override = previous
    session.close()
