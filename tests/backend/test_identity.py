"""One normal form for identifiers (backend.auth.identity): what is stored, looked up at login
and matched to ``admin_emails``. Property tests generate look-alike spellings of an admin
address; none may give a second account, or site admin to an address that is not the admin's
after normalisation."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy.orm import Session

from backend.auth import identity, service
from backend.auth.schemas import RegisterIn
from backend.config import Settings, settings
from backend.errors import ConflictError
from backend.models import User

ADMIN = "site.admin@example.org"
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u202d",
             "\u2066", "\u061c", "\u180e", "\u034f", "\ufe0f", "\x00", "\x1f", "\x7f", "\x85",
             "\u3164", "\U000e0041"]
FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.@"}
HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "i": "\u0456", "p": "\u0440"}


@st.composite
def admin_lookalikes(draw: st.DrawFn, base: str = ADMIN) -> str:
    """The admin address disguised: case, full-width letters, invisible characters, combining
    marks, homoglyphs from other scripts, outer spaces, a trailing dot on the domain."""
    chars = list(base)
    out = []
    for ch in chars:
        kind = draw(st.sampled_from(["same", "upper", "fullwidth", "homoglyph", "invisible",
                                     "combining", "same", "same"]))
        if kind == "upper":
            out.append(ch.upper())
        elif kind == "fullwidth":
            out.append(FULLWIDTH.get(ch, ch))
        elif kind == "homoglyph":
            out.append(HOMOGLYPHS.get(ch, ch))
        elif kind == "invisible":
            out.append(ch + draw(st.sampled_from(INVISIBLE)))
        elif kind == "combining":
            out.append(ch + draw(st.sampled_from(["\u0301", "\u0308", "\u0338"])))
        else:
            out.append(ch)
    text = "".join(out)
    if draw(st.booleans()):
        text = unicodedata.normalize(draw(st.sampled_from(["NFD", "NFKD", "NFC"])), text)
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", ".", " "]))


@pytest.fixture
def admin_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    # Written as an operator might (case, trailing dot): normalised by Settings itself.
    configured = Settings(admin_emails=["Site.Admin@EXAMPLE.org."], dev_mode=True)
    assert configured.admin_emails == [ADMIN]
    monkeypatch.setattr(settings, "admin_emails", configured.admin_emails)


@pytest.mark.parametrize("spelling", [
    "Site.Admin@Example.ORG", " site.admin@example.org ", "site.admin@example.org.",
    "ｓｉｔｅ.ａｄｍｉｎ@ｅｘａｍｐｌｅ.ｏｒｇ", "SITE.ADMIN@EXAMPLE.ORG",
    "site.admin@example.org\u3002",
])
def test_spellings_of_one_address_normalise_to_it(spelling: str) -> None:
    assert identity.normalize_email(spelling) == ADMIN


@pytest.mark.parametrize("spelling", [
    "site.admin\u200b@example.org", "site.admin@example.org\x00", "\u202esite.admin@example.org",
    "site.\u2060admin@example.org", "site.admin@exa\u00admple.org", "site admin@example.org",
    "site.admin@example..org", "@example.org", "site.admin@", "\u0301site@example.org",
    "site.admin@example.org\ufeff", "site.adm\U000e0069n@example.org",
])
def test_invisible_or_broken_spellings_are_refused(spelling: str) -> None:
    with pytest.raises(identity.IdentifierError):
        identity.normalize_email(spelling)


def test_usernames_are_case_insensitive_and_ascii() -> None:
    assert identity.normalize_username("Alice") == "alice"
    assert identity.normalize_username("ａｌｉｃｅ") == "alice"
    for bad in ("al ice", "alice\u200d", "аlice", "a", "x" * 65, "alice\x00"):
        with pytest.raises(identity.IdentifierError):
            identity.normalize_username(bad)


@given(st.text(max_size=40))
def test_normal_form_is_stable_and_clean(text: str) -> None:
    """Normalising twice changes nothing, and no normal form holds a refused character."""
    try:
        once = identity.normalize_identifier(text)
    except identity.IdentifierError:
        return
    assert identity.normalize_identifier(once) == once
    assert once == once.strip() and once == once.casefold()
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zs") for c in once)


def _register(session: Session, email: str, username: str) -> User | str:
    """The account created, or why it was refused ("invalid" / "conflict")."""
    try:
        data = RegisterIn(email=email, username=username, password="long enough password")
    except ValidationError:
        return "invalid"
    try:
        return service.register(session, data)
    except ConflictError:
        return "conflict"


@hsettings(max_examples=150, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spelling=admin_lookalikes())
def test_no_lookalike_becomes_admin(db_session: Session, admin_configured: None,
                                    spelling: str) -> None:
    """Before the admin registered: a spelling becomes admin only if it IS the admin address
    once normalised (then the account holds exactly that address); after: it is a conflict."""
    with db_session.begin_nested() as savepoint:
        result = _register(db_session, spelling, "lookalike")
        if isinstance(result, User):
            assert result.email == identity.normalize_email(spelling)
            assert result.is_admin == (result.email == ADMIN)
        else:
            assert result == "invalid" and identity_or_none(spelling) is None
        if any(c in spelling for c in INVISIBLE):
            assert result == "invalid", spelling
        savepoint.rollback()
    with db_session.begin_nested() as savepoint:
        admin = _register(db_session, ADMIN, "theadmin")
        assert isinstance(admin, User) and admin.is_admin
        second = _register(db_session, spelling, "lookalike")
        if isinstance(second, User):  # a different address: never admin
            assert second.email != ADMIN and not second.is_admin
        else:
            assert second in ("invalid", "conflict")
            if identity_or_none(spelling) == ADMIN:
                assert second == "conflict"
        assert db_session.query(User).filter(User.is_admin).count() == 1
        savepoint.rollback()


def identity_or_none(text: str) -> str | None:
    try:
        return identity.normalize_email(text)
    except identity.IdentifierError:
        return None


def test_login_by_any_spelling_and_one_failure_count(db_session: Session) -> None:
    user = service.register(db_session, RegisterIn(email="Ada@Example.org", username="Ada",
                                                   password="long enough password"))
    assert (user.email, user.username) == ("ada@example.org", "ada")
    for login in ("ada", "ADA", "ａｄａ", "ada@example.org", "ADA@EXAMPLE.ORG.", " Ada "):
        assert service.authenticate(db_session, login, "long enough password").id == user.id
    service._failures.clear()
    for login in ("ada", "ADA", "Ada@Example.org"):
        with pytest.raises(Exception, match="Wrong username"):
            service.authenticate(db_session, login, "wrong")
    assert list(service._failures) == [f"user:{user.id}"]
    assert len(service._failures[f"user:{user.id}"]) == 3
    service._failures.clear()


def test_admin_emails_setting_refuses_invisible_characters() -> None:
    with pytest.raises(ValidationError, match="invisible or control"):
        Settings(admin_emails=["admin\u200b@example.org"], dev_mode=True)


@pytest.mark.parametrize("key", ["dev-insecure-secret-change-me", "change-me", "CHANGEME",
                                 "secret", "", "short-key", "please-change-me-now-later"])
def test_placeholder_secret_refused_outside_dev_mode(key: str) -> None:
    with pytest.raises(ValidationError, match="SYNTHARENA_SECRET_KEY"):
        Settings(secret_key=key, dev_mode=False)
    assert Settings(secret_key=key, dev_mode=True).secret_key == key


def test_a_real_secret_is_accepted() -> None:
    assert not Settings(secret_key="q8Zp3kR1v9sX2mN7tL4w", dev_mode=False).dev_mode
