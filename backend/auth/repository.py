from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from backend.models import ApiToken, User

# Identifiers arrive normalised (backend.auth.identity) and are stored normalised, so plain
# equality is the comparison: the unique constraints hold on the normal form.


def user_by_login(session: Session, login: str) -> User | None:
    """``login``: a normalised username or e-mail address."""
    return session.scalars(
        select(User).where(or_(User.username == login, User.email == login))
    ).first()


def user_by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).one_or_none()


def login_taken(session: Session, email: str, username: str) -> bool:
    stmt = select(User.id).where(or_(User.email == email, User.username == username))
    return session.scalars(stmt).first() is not None


def tokens_of(session: Session, user_id: int) -> Sequence[ApiToken]:
    return session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
    ).all()


def token_by_digest(session: Session, digest: str) -> tuple[ApiToken, User] | None:
    """The token with this digest and its user, in one query (every API request asks)."""
    found = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == digest)
    ).one_or_none()
    return None if found is None else (found[0], found[1])
