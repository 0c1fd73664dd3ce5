"""The schema comes from the migrations, and the models match them (`alembic check`)."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from sqlalchemy import Engine, create_engine, make_url, text

from tests.conftest import alembic_config, database_url_for_tests, ensure_database


def test_alembic_check_is_clean_on_postgres(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        command.check(alembic_config(conn))  # raises if models and migrations differ


def test_downgrade_and_upgrade_roundtrip() -> None:
    # A scratch database: the shared test database may be in use by another run.
    url = make_url(database_url_for_tests()).set(
        database=f"syntharena_test_migrations_{os.getpid()}")
    ensure_database(url.render_as_string(hide_password=False))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            cfg = alembic_config(conn)
            command.upgrade(cfg, "head")
            conn.commit()
            command.downgrade(cfg, "base")
            conn.commit()
            tables = conn.scalar(text(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema='public' "
                "AND table_name <> 'alembic_version'"))
            assert tables == 0
            command.upgrade(cfg, "head")
            conn.commit()
            command.check(cfg)
    finally:
        engine.dispose()
        admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}"'))
        admin.dispose()


def test_sqlite_default_migrates_and_checks(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as conn:
        cfg = alembic_config(conn)
        command.upgrade(cfg, "head")
        conn.commit()
        command.check(cfg)
    engine.dispose()
