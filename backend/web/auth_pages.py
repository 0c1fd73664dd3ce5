"""Log in, register, log out (HTML forms over ``backend.auth.service``)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from backend.auth import service
from backend.auth.schemas import RegisterIn
from backend.config import settings
from backend.db import SessionDep
from backend.errors import AppError
from backend.security import set_session_cookie
from backend.web import flash
from backend.web.deps import CsrfChecked, WebUser
from backend.web.templating import render

router = APIRouter(include_in_schema=False)


def safe_next(value: str | None) -> str:
    """Only same-site paths (no open redirect to another host)."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/"
    return value


@router.get("/login")
def login_page(request: Request, user: WebUser, next: str = "/") -> Response:
    if user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next)})


@router.post("/login", dependencies=[CsrfChecked])
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    try:
        user = service.authenticate(session, username.strip(), password)
    except AppError as err:
        return render(
            request,
            "login.html",
            {"error": err.message, "username": username, "next": safe_next(next)},
            status_code=err.status_code,
        )
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, user)
    flash.add(response, f"Welcome back, {user.username}.")
    return response


@router.get("/register")
def register_page(request: Request, user: WebUser, next: str = "/") -> Response:
    return render(
        request, "register.html", {"form": {}, "next": safe_next(next)}, user=user
    )


def _explain(err: ValidationError) -> str:
    words = {
        "username": "The username needs 2–64 letters, digits, dots, dashes or underscores.",
        "email": "Enter a valid e-mail address (name@example.org).",
        "password": "The password needs at least 8 characters.",
    }
    said: dict[str, str] = {}
    for e in err.errors():
        field = str(e["loc"][0]) if e.get("loc") else "form"
        if e.get("type") == "value_error" and field in ("email", "username"):
            # The normaliser's own reason (e.g. an invisible character), said plainly.
            reason = str(e["msg"]).removeprefix("Value error, ")
            said.setdefault(field, f"The {'e-mail address' if field == 'email' else field} "
                                   f"{reason}.")
        said.setdefault(field, words.get(field, f"Check the {field}."))
    return " ".join(said.values())


@router.post("/register", dependencies=[CsrfChecked])
def register(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    form = {"username": username, "email": email}
    try:
        data = RegisterIn(username=username.strip(), email=email.strip(), password=password)
        user = service.register(session, data)
    except ValidationError as err:
        return render(request, "register.html", {"error": _explain(err), "form": form,
                                                 "next": safe_next(next)}, status_code=422)
    except AppError as err:
        return render(request, "register.html", {"error": err.message, "form": form,
                                                 "next": safe_next(next)},
                      status_code=err.status_code)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, user)
    flash.add(response, f"Welcome, {user.username}! Pick a challenge and join it to submit.")
    return response


@router.post("/logout", dependencies=[CsrfChecked])
def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(settings.session_cookie_name)
    flash.add(response, "You are logged out.", "info")
    return response
