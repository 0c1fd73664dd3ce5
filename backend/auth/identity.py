"""The one normal form of account identifiers (e-mail addresses and usernames).

Every identifier is normalised here before it is compared, stored, looked up at login or
matched against ``admin_emails``, so two spellings that look alike (case, full-width letters,
composed/decomposed accents, a trailing dot or space) are one identity, and spellings that
only differ by what a reader cannot see (zero-width joiners, bidi controls, NUL) are refused.

Imports nothing from the settings: ``backend.config`` normalises ``admin_emails`` with it."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

# Unicode categories no identifier may contain after NFKC: controls, format characters
# (zero-width space/joiners, bidi overrides, soft hyphen), surrogates, private use, unassigned,
# and separators (spaces of every width, line/paragraph separators).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
# Invisible characters that Unicode classes as letters or marks: Hangul fillers, the Mongolian
# vowel separator, combining grapheme joiner, variation selectors.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u180e\u034f") | frozenset(
    chr(c) for c in [*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]
)
_DOMAIN_DOTS = {0x3002: ".", 0xFF61: "."}
EMAIL_MAX = 320
USERNAME_PATTERN = re.compile(r"[a-z0-9_.-]{2,64}")
_EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")


class IdentifierError(ValueError):
    """The identifier cannot be normalised; the message says what to change."""


def _name(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, '(unnamed)')}"


def normalize_identifier(raw: str) -> str:
    """NFKC, case-folded, NFKC again (case folding can denormalise), outer whitespace and
    trailing dot of an e-mail domain removed; refuses invisible and control characters inside
    (outer whitespace, e.g. a pasted tab or newline, is only trimmed)."""
    raw = raw.strip()
    for ch in raw:  # checked before NFKC too: NFKC keeps most, but decides nothing for us
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs") or ch in _INVISIBLE:
            raise IdentifierError(f"contains the invisible or control character {_name(ch)}; "
                                  "type it again without it")
    text = unicodedata.normalize("NFKC", raw)
    text = unicodedata.normalize("NFKC", text.casefold()).strip()
    for ch in text:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES or ch in _INVISIBLE:
            what = "a space" if unicodedata.category(ch) == "Zs" else _name(ch)
            raise IdentifierError(f"contains {what}; identifiers may not")
    if text and unicodedata.category(text[0]).startswith("M"):
        raise IdentifierError(f"starts with the combining mark {_name(text[0])}")
    return text


def normalize_email(raw: str) -> str:
    """``Admin@Example.ORG.`` -> ``admin@example.org`` (a fully qualified domain's trailing
    dot names the same host)."""
    text = normalize_identifier(raw)
    if not _EMAIL_PATTERN.fullmatch(text):
        raise IdentifierError("is not an e-mail address (name@example.org)")
    local, _, domain = text.rpartition("@")
    # IDNA's other label separators (ideographic and halfwidth full stops) are dots.
    domain = domain.translate(_DOMAIN_DOTS).rstrip(".")
    if not local or not domain or domain.startswith(".") or ".." in domain:
        raise IdentifierError("is not an e-mail address (name@example.org)")
    text = f"{local}@{domain}"
    if len(text) > EMAIL_MAX:
        raise IdentifierError(f"is longer than {EMAIL_MAX} characters")
    return text


def normalize_username(raw: str) -> str:
    """Usernames are case-insensitive: stored and compared in their case-folded form."""
    text = normalize_identifier(raw)
    if not USERNAME_PATTERN.fullmatch(text):
        raise IdentifierError("needs 2–64 letters, digits, dots, dashes or underscores")
    return text


def normalize_login(raw: str) -> str:
    """What a login form's "username or e-mail" field is looked up by."""
    return normalize_email(raw) if "@" in raw else normalize_username(raw)


def _email(value: str) -> str:
    return normalize_email(value)


def _username(value: str) -> str:
    return normalize_username(value)


def _login(value: str) -> str:
    return normalize_login(value)


# Pydantic field types: request models validate and normalise in one step (422 on refusal).
Email = Annotated[str, Field(max_length=EMAIL_MAX * 4), AfterValidator(_email)]
Username = Annotated[str, Field(max_length=256), AfterValidator(_username)]
Login = Annotated[str, Field(max_length=EMAIL_MAX * 4, description="Username or e-mail address"),
                  AfterValidator(_login)]
