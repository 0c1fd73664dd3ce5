"""normalise identifiers: e-mail addresses and usernames in their one normal form

Accounts are looked up, compared and matched to ``admin_emails`` by the normal form of
``backend.auth.identity`` (NFKC, case-folded, no invisible characters); rows written before
are rewritten to it, so the existing unique constraints hold on the normal form. Two accounts
whose identifiers normalise alike cannot both be kept: the upgrade stops and names them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:00:00

"""
from collections.abc import Sequence
import unicodedata

import sqlalchemy as sa
from alembic import op

from backend.auth.identity import IdentifierError, normalize_email, normalize_username

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _legacy(normalise, value: str) -> str:
    """Legacy rows may hold what is refused today: invisible characters are dropped (they
    were never part of the identity a person typed); a value that still fails stays as is."""
    visible = "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cf", "Cs"))
    try:
        return normalise(visible)
    except IdentifierError:
        return value


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, email, username FROM users ORDER BY id")).all()
    new = {r.id: (_legacy(normalize_email, r.email), _legacy(normalize_username, r.username))
           for r in rows}
    for column, index in (("e-mail", 0), ("username", 1)):
        seen: dict[str, int] = {}
        for user_id, values in new.items():
            other = seen.setdefault(values[index], user_id)
            if other != user_id:
                raise RuntimeError(
                    f"Accounts {other} and {user_id} have the same {column} once normalised "
                    f"({values[index]!r}); rename or delete one, then upgrade again."
                )
    old = {r.id: (r.email, r.username) for r in rows}
    changed = [(i, e, u) for i, (e, u) in new.items() if (e, u) != old[i]]
    # Two passes through placeholders: swapping two rows' spellings must not trip the unique
    # constraints half-way.
    for user_id, _, _ in changed:
        conn.execute(sa.text("UPDATE users SET email = :e, username = :u WHERE id = :i"),
                     {"e": f"#renaming-{user_id}", "u": f"#renaming-{user_id}", "i": user_id})
    for user_id, email, username in changed:
        conn.execute(sa.text("UPDATE users SET email = :e, username = :u WHERE id = :i"),
                     {"e": email, "u": username, "i": user_id})


def downgrade() -> None:
    pass  # the normal forms are valid values for the old code too
