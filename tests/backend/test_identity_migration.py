"""Migration 0004 rewrites accounts created before identifiers were normalised, and stops
(naming both accounts) when two of them are one identity once normalised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Connection, text

from tests.conftest import alembic_config, scratch_database

INSERT = text("INSERT INTO users (email, username, password_hash, is_admin, is_active) "
              "VALUES (:e, :u, 'x', false, true)")


@pytest.fixture
def at_0001() -> Iterator[Connection]:
    with scratch_database("identity") as conn:
        command.downgrade(alembic_config(conn), "base")
        command.upgrade(alembic_config(conn), "0001")
        conn.commit()
        yield conn


def test_existing_accounts_are_normalised(at_0001: Connection) -> None:
    rows = [("Ada@Example.ORG", "Ada"), ("bob@example.org.", "BOB.b"),
            ("car\u200bl@example.org", "carl"), ("ｄａｎ@example.org", "Dan_1"),
            # Swapped spellings: each row's normal form is the other's stored value.
            ("Eve@example.org", "eve"), ("eve2@example.org", "Eve2")]
    for email, username in rows:
        at_0001.execute(INSERT, {"e": email, "u": username})
    at_0001.commit()
    command.upgrade(alembic_config(at_0001), "head")
    at_0001.commit()
    got = at_0001.execute(text("SELECT email, username FROM users ORDER BY id")).all()
    assert [tuple(r) for r in got] == [
        ("ada@example.org", "ada"), ("bob@example.org", "bob.b"), ("carl@example.org", "carl"),
        ("dan@example.org", "dan_1"), ("eve@example.org", "eve"), ("eve2@example.org", "eve2")]


def test_two_accounts_of_one_identity_stop_the_upgrade(at_0001: Connection) -> None:
    at_0001.execute(INSERT, {"e": "admin@example.org", "u": "admin"})
    at_0001.execute(INSERT, {"e": "Admin@Example.org", "u": "admin2"})
    at_0001.commit()
    with pytest.raises(RuntimeError, match="same e-mail once normalised"):
        command.upgrade(alembic_config(at_0001), "head")
    at_0001.rollback()
    emails = at_0001.execute(text("SELECT email FROM users ORDER BY id")).scalars().all()
    assert emails == ["admin@example.org", "Admin@Example.org"]  # nothing half-rewritten
