"""Request input the database could not hold is refused up front, for every route at once.

``check_request`` is an application-wide dependency (it runs before a route's own parameters
and body are validated): control characters (``backend.text``) in the path, the query string
or any JSON string; JSON numbers that are not finite (``NaN``, ``Infinity``, ``1e400``); and
integers outside PostgreSQL's BIGINT in the body or in integer path/query parameters (ids).
``check_form`` does the same for the fields of HTML form posts (the web router's dependency).
Every refusal is a 422 naming the field and what to change, in FastAPI's validation-error form.
"""

from __future__ import annotations

import json
import math
import types
import typing
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from backend.text import disallowed_message

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Integer path and query parameters are ids (and version numbers): INTEGER columns.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Loc = tuple[str | int, ...]


class _Bad:
    """A JSON number the API cannot use, kept in place so the walk can say where it was."""

    def __init__(self, literal: str, why: str) -> None:
        self.literal = literal
        self.why = why


def _float(literal: str) -> float | _Bad:
    value = float(literal)
    if not math.isfinite(value):
        return _Bad(literal, "is too large to be a number here; send a finite number")
    return value


def _int(literal: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int | _Bad:
    if len(literal) > 25:  # far beyond BIGINT; also keeps int() away from huge digit strings
        return _Bad(literal[:25] + "…", _out_of_range(low, high))
    value = int(literal)
    if not low <= value <= high:
        return _Bad(literal, _out_of_range(low, high))
    return value


def _constant(literal: str) -> _Bad:
    return _Bad(literal, "is not a number JSON allows (NaN and Infinity are not accepted)")


def _out_of_range(low: int, high: int) -> str:
    return f"is out of range: integers here are between {low} and {high}"


def _error(loc: Loc, msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None}])


def _text_error(loc: Loc, value: str) -> RequestValidationError | None:
    problem = disallowed_message(value)
    return None if problem is None else _error(loc, f"Value {problem}", "control_character")


def _walk(root: Any, root_loc: Loc) -> RequestValidationError | None:
    """The first unstorable value, depth first; iterative (a deeply nested body that the JSON
    parser accepted must not exhaust the stack here)."""
    stack: list[tuple[Any, Loc]] = [(root, root_loc)]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, str):
            if (err := _text_error(loc, value)) is not None:
                return err
        elif isinstance(value, _Bad):
            return _error(loc, f"The number {value.literal} {value.why}", "number_out_of_range")
        elif isinstance(value, list):
            stack.extend((item, (*loc, i)) for i, item in reversed(list(enumerate(value))))
        elif isinstance(value, dict):
            for key in value:
                if (err := _text_error((*loc, key), key)) is not None:
                    return err
            stack.extend((item, (*loc, k)) for k, item in reversed(list(value.items())))
    return None


def check_json(body: bytes) -> None:
    """Raise a 422 for the first value in a JSON body the API cannot store."""
    try:
        value = json.loads(body, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except ValueError:
        return  # not JSON: FastAPI's own parsing answers it
    if (err := _walk(value, ("body",))) is not None:
        raise err


def _is_int(annotation: Any) -> bool:
    if annotation is int:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return int in typing.get_args(annotation)
    return False


def _int_params(route: APIRoute) -> tuple[set[str], set[str]]:
    """Names of the route's integer path and query parameters (its dependencies' too)."""
    path: set[str] = set()
    query: set[str] = set()
    stack = [route.dependant]
    while stack:
        dep = stack.pop()
        path |= {f.alias for f in dep.path_params if _is_int(f.field_info.annotation)}
        query |= {f.alias for f in dep.query_params if _is_int(f.field_info.annotation)}
        stack.extend(dep.dependencies)
    return path, query


def _check_params(kind: str, items: list[tuple[str, str]], ints: set[str]) -> None:
    for name, value in items:
        if (err := _text_error((kind, name), value)) is not None:
            raise err
        if name in ints:
            digits = value.strip()
            number = _int(digits, INT32_MIN, INT32_MAX) if digits.lstrip("+-").isdigit() else None
            if isinstance(number, _Bad):
                raise _error((kind, name), f"The number {number.literal} {number.why}",
                             "number_out_of_range")


def _is_json(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


async def check_request(request: Request) -> None:
    """Application-wide dependency (see the module docstring)."""
    if (err := _text_error(("path",), request.scope["path"])) is not None:
        raise err
    route = request.scope.get("route")
    path_ints, query_ints = _int_params(route) if isinstance(route, APIRoute) else (set(), set())
    _check_params("path", list(request.path_params.items()), path_ints)
    _check_params("query", request.query_params.multi_items(), query_ints)
    # Only routes that take a JSON body: FastAPI has read it already (no second read), and a
    # streaming upload's bytes are never buffered here.
    if isinstance(route, APIRoute) and route.body_field is not None and _is_json(request):
        check_json(await request.body())


async def check_form(request: Request) -> None:
    """Web router dependency: every text field of a form post (files are not text)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        return
    form = await request.form()
    for name, value in form.multi_items():
        if (err := _text_error(("body", name), name)) is not None:
            raise err
        if isinstance(value, str) and (err := _text_error(("body", name), value)) is not None:
            raise err
