"""The schema comes from the migrations, and the models match them (`alembic check`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Engine, create_engine, text

from tests.conftest import alembic_config, scratch_database


def test_alembic_check_is_clean_on_postgres(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        command.check(alembic_config(conn))  # raises if models and migrations differ


def test_downgrade_and_upgrade_roundtrip() -> None:
    with scratch_database("migrations") as conn:
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


def test_sqlite_default_migrates_and_checks(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as conn:
        cfg = alembic_config(conn)
        command.upgrade(cfg, "head")
        conn.commit()
        command.check(cfg)
    engine.dispose()
