"""What text the platform accepts and stores: one rule for every request field, form field and
stored log. PostgreSQL text cannot hold NUL, a lone surrogate cannot be encoded as UTF-8, and
other control characters only hide or garble what a reader sees; tab, newline and carriage
return are ordinary text."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import BeforeValidator

# CSI / OSC terminal sequences (colours, titles) that programs write to their logs: removed
# whole, so a coloured log reads as text instead of a row of replacement characters.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?)")
REPLACEMENT = "\ufffd"


# C0 controls but tab, LF and CR; DEL and the C1 controls; lone surrogates (only reachable
# through JSON ``\\udXXX`` escapes).
DISALLOWED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def first_disallowed(text: str) -> tuple[int, str] | None:
    """(index, character) of the first character no stored text may hold, or None."""
    found = DISALLOWED.search(text)
    return None if found is None else (found.start(), found.group())


def describe(ch: str) -> str:
    """``U+0000 (NUL)`` style name of a character, for error messages."""
    name = unicodedata.name(ch, "")
    if not name:
        name = {"\x00": "NUL", "\x1b": "ESC", "\x7f": "DEL"}.get(ch, "control character")
        if "\ud800" <= ch <= "\udfff":
            name = "lone surrogate"
    return f"U+{ord(ch):04X} ({name})"


def disallowed_message(text: str) -> str | None:
    """What is wrong with ``text`` in words a user can act on, or None when it is fine."""
    found = first_disallowed(text)
    if found is None:
        return None
    i, ch = found
    return (f"contains the control character {describe(ch)} at position {i}; remove it "
            "(text may hold tabs and line breaks, but no other control characters)")


def clean_log_text(text: str) -> str:
    """Container output made storable: terminal escape sequences removed, every other
    disallowed character replaced by U+FFFD (the log still shows where it was)."""
    if DISALLOWED.search(text) is None:
        return text
    return DISALLOWED.sub(REPLACEMENT, _ANSI.sub("", text))


def _storable(value: object) -> object:
    # Before the str validation, so length limits keep pydantic's own wording; a non-string
    # is left for it to refuse.
    problem = disallowed_message(value) if isinstance(value, str) else None
    if problem is not None:
        raise ValueError(problem)
    return value


# Pydantic field type for request text: the same rule for models built outside a request too
# (CLI, page handlers building models from form fields); requests are also checked as a whole
# by backend.input_guard.
STORABLE = BeforeValidator(_storable)
Text = Annotated[str, STORABLE]
# With length limits, put them before STORABLE so they keep pydantic's wording, e.g.
# ``Annotated[str, Field(max_length=64), STORABLE] | None``.
