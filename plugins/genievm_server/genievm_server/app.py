"""The web application, made by ``create_app(settings)``: the API under ``/api/v1``, ``/metrics``, and the
scheduler, started and stopped with the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from genievm_core.errors import GenieVMError
from genievm_core.logging import get_logger
from genievm_server import console
from genievm_server.api import jobs, policies, repositories, system
from genievm_server.api.deps import ServiceDep, needs
from genievm_server.console import CONSOLE
from genievm_server.errors import InvalidRequestError, UnknownNameError, error_body, status_of
from genievm_server.scheduler import Scheduler
from genievm_server.service import Service
from genievm_server.settings import ServerSettings

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"
log = get_logger("genievm.server")
VERSION = "0.1.0"


def create_app(settings: ServerSettings, *, disabled_plugins: tuple[str, ...] = (), scheduler: bool = True) -> FastAPI:
    """The app; its service (database, job registry, plugins) opens when it starts and closes when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(settings, disabled_plugins=disabled_plugins)
        app.state.service = service
        app.state.scheduler = Scheduler(service)
        if scheduler:
            app.state.scheduler.start()
        try:
            yield
        finally:
            app.state.scheduler.stop()
            service.close()

    app = FastAPI(
        title="GenieVM server",
        version=VERSION,
        lifespan=lifespan,
        openapi_url=None,  # served below, behind a token like every route but health
        docs_url=None,
        redoc_url=None,
        description="Backups on schedule from policies; jobs, backups and repositories of GenieVM. "
        "Every route but health needs an API token (Authorization: Bearer TOKEN).",
    )
    for router in (system.router, repositories.router, jobs.router, policies.router):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(console.router)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, **needs("read-only"))
    def metrics(service: ServiceDep) -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/openapi.json", include_in_schema=False, **needs("read-only"))
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.exception_handler(GenieVMError)
    async def genievm_error(request: Request, exc: GenieVMError) -> Response:
        if request.url.path.startswith(CONSOLE):
            return console.error_page(request, exc, status_of(exc))
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
        return _error(InvalidRequestError(f"invalid request: {where}: {first['msg']}"))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("request.internal_error", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        body = {"error": {"code": "InternalError", "exit": 1, "message": f"internal error: {type(exc).__name__}"}}
        return JSONResponse(body, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error(UnknownNameError(f"no route {request.method} {request.url.path}"))
        body = {"error": {"code": "HTTPError", "exit": 1, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code)

    return app


def _error(exc: GenieVMError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status_of(exc) == 401 else None
    return JSONResponse(error_body(exc), status_code=status_of(exc), headers=headers)
