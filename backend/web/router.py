"""Mounts the web app on the API application: page routes, static files, HTML error pages
and the sqladmin CRUD views. ``backend.main.create_app`` calls ``mount_web(app)`` once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse, Response

from backend.db import session_scope
from backend.deps import optional_user
from backend.errors import AppError, UnauthorizedError, UnprocessableError
from backend.input_guard import check_form
from backend.models import User
from backend.web.auth_pages import router as auth_router
from backend.web.challenge_pages import router as challenge_router
from backend.web.manage_pages import router as manage_router
from backend.web.submission_pages import router as submission_router
from backend.web.templating import STATIC_DIR, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(check_form)])
router.include_router(auth_router)
router.include_router(challenge_router)
router.include_router(submission_router)
router.include_router(manage_router)

Handler = Callable[[Request, Exception], Response | Awaitable[Response]]

TITLES = {
    400: "That did not work",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Please check the form",
    429: "Slow down",
}


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/admin")):
        return False
    return "text/html" in request.headers.get("accept", "") or request.method == "POST"


def _user_of(request: Request) -> User | None:
    """The visitor, for the page header of an error page (its own short unit of work)."""
    try:
        with session_scope() as session:
            return optional_user(request, session)
    except AppError:
        return None


def _page_error_handler(api_handler: Handler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        err = cast(AppError, exc)
        if not wants_html(request) and api_handler is not None:
            result = api_handler(request, exc)
            return await result if isinstance(result, Awaitable) else result
        if isinstance(err, UnauthorizedError) and request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return render(
            request,
            "error.html",
            {"title": TITLES.get(err.status_code, "Something went wrong"), "message": err.message},
            user=_user_of(request),
            status_code=err.status_code,
        )

    return handle


def _page_validation_handler(api_handler: Handler | None) -> Handler:
    """A page's refused input (e.g. a control character in a form field) as an error page."""
    page = _page_error_handler(None)

    async def handle(request: Request, exc: Exception) -> Response:
        if not wants_html(request) and api_handler is not None:
            result = api_handler(request, exc)
            return await result if isinstance(result, Awaitable) else result
        errors = cast(RequestValidationError, exc).errors()
        words = "; ".join(f"{e['loc'][-1]}: {e['msg']}" if e.get("loc") else str(e["msg"])
                          for e in errors[:3])
        result = page(request, UnprocessableError(f"{words}. Correct it and try again."))
        return await result if isinstance(result, Awaitable) else result

    return handle


def mount_web(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    api_handler = cast(Handler | None, app.exception_handlers.get(AppError))
    app.add_exception_handler(AppError, _page_error_handler(api_handler))
    api_validation = cast(Handler | None, app.exception_handlers.get(RequestValidationError))
    app.add_exception_handler(RequestValidationError, _page_validation_handler(api_validation))
    from backend.web.admin_views import mount_admin

    mount_admin(app)
