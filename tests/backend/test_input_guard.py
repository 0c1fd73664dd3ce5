"""The shared text rule (backend/text.py) and the JSON part of the request guard."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given
from hypothesis import strategies as st

from backend.input_guard import check_json
from backend.text import DISALLOWED, clean_log_text, disallowed_message


def _refusal(body: bytes) -> dict[str, object] | None:
    try:
        check_json(body)
    except RequestValidationError as exc:
        return dict(exc.errors()[0])
    return None


@pytest.mark.parametrize(("body", "loc", "words"), [
    (b'{"a": "x\\u0000"}', ("body", "a"), "U+0000"),
    (b'{"a": ["ok", {"b": "\\u001b[2J"}]}', ("body", "a", 1, "b"), "U+001B"),
    (b'{"k\\u0000": 1}', ("body", "k\x00"), "U+0000"),
    (b'{"a": "\\ud83d"}', ("body", "a"), "lone surrogate"),
    (b'{"a": "\\u009b"}', ("body", "a"), "U+009B"),
    (b'{"n": NaN}', ("body", "n"), "NaN"),
    (b'{"n": [-Infinity]}', ("body", "n", 0), "Infinity"),
    (b'{"n": 1e400}', ("body", "n"), "finite"),
    (b'{"n": -9223372036854775809}', ("body", "n"), "out of range"),
    (b'{"n": 9223372036854775808}', ("body", "n"), "out of range"),
])
def test_refused_json_names_the_place(body: bytes, loc: tuple, words: str) -> None:
    err = _refusal(body)
    assert err is not None and tuple(err["loc"]) == loc and words in str(err["msg"])


@pytest.mark.parametrize("body", [
    b'{"a": "tab\\tnew\\nline\\r ok", "b": "\\u00e9\\ud83d\\ude00 emoji"}',
    b'{"n": 9223372036854775807, "m": -9223372036854775808, "f": 1e300}', b"not json", b"",
    b"[" * 900 + b"]" * 900,
])
def test_ordinary_json_passes(body: bytes) -> None:
    assert _refusal(body) is None


def test_deep_nesting_is_walked_without_recursion() -> None:
    body = b'{"a": ' + b"[" * 950 + b'"\\u0000"' + b"]" * 950 + b"}"
    err = _refusal(body)
    assert err is not None and len(err["loc"]) == 952


@given(st.text())
def test_cleaned_logs_hold_nothing_disallowed(text: str) -> None:
    cleaned = clean_log_text(text)
    assert DISALLOWED.search(cleaned) is None
    cleaned.encode("utf-8")  # storable: raises on a lone surrogate
    if "\x1b" not in text:  # no terminal sequence to remove: only the length-1 replacements
        assert len(cleaned) == len(text)
        assert all(a == b or b == "\ufffd" for a, b in zip(text, cleaned, strict=True))


def test_clean_log_text_removes_terminal_sequences_and_marks_the_rest() -> None:
    assert clean_log_text("\x1b[1;31mERROR\x1b[0m x\x00y\x07\r\n") == "ERROR x\ufffdy\ufffd\r\n"
    assert clean_log_text("\x1b]0;title\x07done") == "done"
    assert clean_log_text("plain\ttext\n") == "plain\ttext\n"


def test_messages_say_what_to_do() -> None:
    msg = disallowed_message("ab\x00")
    assert msg is not None and "U+0000" in msg and "remove it" in msg
    assert disallowed_message("fine\ttext\r\n") is None
    assert json.dumps(msg)  # JSON-safe (it goes into the 422 body)
