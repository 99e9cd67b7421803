"""`create_app(settings)`: the ASGI app, built from settings, with nothing global."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cog import __version__
from cog.config import Settings
from cog.db.migrate import ensure_schema
from cog.db.session import unreachable
from cog.errors import CogError
from cog.runtime import Runtime
from cog.web import pages
from cog.web.api import batches as batches_api
from cog.web.api import exports as exports_api
from cog.web.api import images as images_api
from cog.web.api import jobs as jobs_api
from cog.web.api import restyles as restyles_api
from cog.web.api import search as search_api
from cog.web.api import series as series_api
from cog.web.api import versions as versions_api
from cog.web.pages.errors import error_page, htmx_error_headers
from cog.web.security import CrossSiteGuard, SecurityHeaders, TokenGuard

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings) -> FastAPI:
    state = Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await ensure_schema(state.engine, auto_upgrade=settings.is_sqlite)
            await state.start()
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="Cog",
        version=__version__,
        description="Make and organize AI-generated image series.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.cog = state

    @app.exception_handler(CogError)
    async def cog_error(request: Request, exc: CogError) -> Response:
        if page := error_page(request, exc.status_code, exc.message):
            return page
        return JSONResponse(
            {"detail": exc.message, **exc.answer_extra},
            status_code=exc.status_code,
            headers=htmx_error_headers(request, exc.message),
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette's `Allow` names the methods of the first route on the path only.
            exc = StarletteHTTPException(405, exc.detail, {"Allow": _allowed_methods(request)})
        if page := error_page(request, exc.status_code, str(exc.detail)):
            page.headers.update(exc.headers or {})
            return page
        return await http_exception_handler(request, exc)

    async def database_away(request: Request, exc: Exception) -> Response:
        if unreachable(exc) is None:
            raise exc  # a real fault: the server's 500
        detail = "Cog cannot reach its database right now. Try again in a moment."
        if page := error_page(request, 503, detail):
            return page
        return JSONResponse(
            {"detail": detail},
            status_code=503,
            headers={"Retry-After": "2", **htmx_error_headers(request, detail)},
        )

    async def conflict(request: Request, exc: Exception) -> Response:
        # Checks run before writes; a constraint only fails when another request changed the
        # same rows in between (a series deleted while an image was being added to it).
        log.info("a write lost a race: %s", exc)
        detail = (
            "This conflicts with a change made at the same moment (something it refers to was "
            "deleted or changed); nothing was saved. Reload and try again."
        )
        if page := error_page(request, 409, detail):
            return page
        return JSONResponse(
            {"detail": detail}, status_code=409, headers=htmx_error_headers(request, detail)
        )

    app.add_exception_handler(sa.exc.IntegrityError, conflict)
    app.add_exception_handler(sa.exc.DBAPIError, database_away)
    app.add_exception_handler(OSError, database_away)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [_describe(err) for err in exc.errors()]
        detail = "; ".join(problems)
        if page := error_page(request, 422, detail):
            return page
        return JSONResponse(
            _jsonable({"detail": detail, "errors": exc.errors()}),
            status_code=422,
            headers=htmx_error_headers(request, detail),
        )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Cog API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    for router in (
        series_api.router,
        # Before the images routes: `/api/images/export` and `/api/images/search` are not ids.
        exports_api.router,
        search_api.router,
        images_api.router,
        versions_api.router,
        jobs_api.router,
        batches_api.router,
        restyles_api.router,
        *pages.ROUTERS,
    ):
        # The routes themselves, not `include_router`: FastAPI wraps an included router in a
        # route of its own that walks all of the router's routes, twice, for each request; on
        # a 404 that made finding no route cost more than answering a thumbnail. Each route
        # already carries its full path, tags and responses from its router.
        app.router.routes.extend(router.routes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(CrossSiteGuard)
    app.add_middleware(TokenGuard, token=settings.token)
    app.add_middleware(SecurityHeaders)
    return app


ALLOW_PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> str:
    """The methods some route serves at the request's path, found by asking the routes."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in ALLOW_PROBED
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def _describe(err: object) -> str:
    assert isinstance(err, dict)
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    message = str(err.get("msg", "is not valid"))
    return f"{where}: {message}" if where else message


def _jsonable(value: object) -> Any:
    """What JSON can carry of a validation error. Pydantic echoes the offending input (and
    sometimes exception objects in `ctx`): objects become strings, NaN and Infinity become
    strings, and text that is not valid Unicode (a lone surrogate sent as `\\ud800`) has `?`
    in place of what cannot be encoded."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {_jsonable(str(key)): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return _jsonable(str(value))
