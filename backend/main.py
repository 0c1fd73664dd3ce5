"""The FastAPI application: JSON API under /api (OpenAPI at /docs); web pages live at /."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib import resources

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import exc as sa_exc

from backend import kept_lane
from backend.auth.router import router as auth_router
from backend.challenges.router import router as challenges_router
from backend.config import settings
from backend.datasets.router import router as datasets_router
from backend.errors import AppError
from backend.images.router import router as images_router
from backend.input_guard import check_request
from backend.leaderboards.router import router as leaderboards_router
from backend.submissions.router import router as submissions_router

log = logging.getLogger(__name__)

API_ROUTERS = (
    auth_router,
    challenges_router,
    datasets_router,
    images_router,
    submissions_router,
    leaderboards_router,
)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if exc.status_code == 422:  # one shape for every 422 of the API: FastAPI's error list
        return JSONResponse({"detail": [{"type": "value_error", "loc": ["body"],
                                         "msg": exc.message}]}, status_code=422)
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Overload (no pooled connection in time) or a database outage: a retryable 503, not a
    500. Nothing was committed: the request's unit of work rolled back."""
    log.warning("database unavailable for %s %s: %s: %s", request.method, request.url.path,
                type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
    return JSONResponse(
        {"detail": "The service is busy or its database is unreachable; nothing was saved. "
                   "Please retry in a few seconds."},
        status_code=503, headers={"Retry-After": "5"},
    )


# Swagger UI and ReDoc from the fastapi-offline package's static files: FastAPI's default
# pages load them from a CDN, so /docs was blank on a server without internet access.
DOCS_ASSETS = "/docs-assets"
FAVICON = "/static/favicon.svg"
# Nothing from elsewhere: ReDoc's sidebar would load its vendor's logo from a CDN, Swagger
# UI its validator badge. Inline scripts and styles are the pages' own; ReDoc searches in a
# blob: worker.
DOCS_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; font-src 'self' data:")


def _mount_docs(app: FastAPI) -> None:
    assets = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=title,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=FAVICON,
            swagger_ui_parameters={"validatorUrl": None})
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json", title=title,
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js", redoc_favicon_url=FAVICON,
            with_google_fonts=False)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page


def validation_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    """FastAPI's error list without the offending input (it may be a password, or NaN that
    JSON cannot carry): the location and message say what to change."""
    out = []
    for err in exc.errors():
        item = {k: v for k, v in err.items() if k in ("type", "loc", "msg", "ctx")}
        if "ctx" in item:
            item["ctx"] = {k: str(v) for k, v in dict(item["ctx"]).items()}
        out.append(jsonable_encoder(item))
    return out


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_errors(exc)}, status_code=422)


async def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    """The database refused a value (out of range, or text it cannot hold) that got past the
    input checks: the request's fault, so a 422 that says so; nothing was saved."""
    log.warning("value refused by the database for %s %s: %s", request.method,
                request.url.path, str(getattr(exc, "orig", exc)).splitlines()[0][:300])
    msg = ("A value in the request cannot be stored (a number out of range, or text with "
           "control characters); nothing was saved. Check the values and retry.")
    return JSONResponse({"detail": [{"type": "unstorable_value", "loc": ["body"], "msg": msg}]},
                        status_code=422)


def _sweep_uploads_once() -> int:
    from backend.db import session_scope
    from backend.images.service import expire_uploads

    with session_scope() as session:
        return expire_uploads(session)


async def _sweep_uploads_forever(interval_s: float) -> None:
    """Abandoned uploads (a browser closed mid-upload) give back their disk and quota without
    waiting for their owner's next upload; every API process sweeps, the row locks make
    that safe."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            expired = await anyio.to_thread.run_sync(_sweep_uploads_once)
        except Exception:  # a database outage: the next sweep tries again
            log.exception("sweeping idle uploads failed")
            continue
        if expired:
            log.info("aborted %d idle uploads", expired)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    interval = settings.upload_sweep_interval_s
    sweeper = asyncio.create_task(_sweep_uploads_forever(interval)) if interval > 0 else None
    try:
        yield
    finally:
        if sweeper is not None:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
        await kept_lane.close()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="SynthArena",
        version="0.1.0",
        description="Medical image-synthesis challenges: upload an algorithm container, "
        "submit it to a phase, get ranked on hidden cases.",
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(check_request)],
    )
    _mount_docs(app)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sa_exc.DataError, _unstorable_value)
    app.add_exception_handler(sa_exc.TimeoutError, _database_unavailable)
    app.add_exception_handler(sa_exc.OperationalError, _database_unavailable)
    for router in API_ROUTERS:
        app.include_router(router)

    @app.get("/api/health", tags=["meta"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    from backend.web.router import mount_web  # pages, /static, HTML errors, /admin

    mount_web(app)
    return app


app = create_app()
