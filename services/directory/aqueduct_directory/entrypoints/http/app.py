"""The FastAPI application: routers per resource, errors mapped once into problem documents."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from eventsourcing.persistence import IntegrityError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.domain.errors import DirectoryError
from aqueduct_directory.entrypoints.http import admin, catalog, organisation, tokens
from aqueduct_libs.ops import add_operational_routes
from aqueduct_libs.sessions import SessionVerifier

__all__ = ["create_http_app"]

log = logging.getLogger(__name__)


def _problem(
    status: int,
    detail: Any,
    code: str,
    headers: Mapping[str, str] | None = None,
    field: str | None = None,
) -> JSONResponse:
    body = {"detail": detail, "code": code} | ({"field": field} if field else {})
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


async def _on_directory_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DirectoryError)
    return _problem(exc.status, exc.detail, exc.code, field=getattr(exc, "field", None))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {401: "unauthorized", 403: "permission_denied", 404: "not_found"}
    return _problem(exc.status_code, exc.detail, codes.get(exc.status_code, "error"), exc.headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A body or parameter of the wrong shape: 422 naming the field, in words (``limits: ...``)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    fields = [".".join(str(part) for part in e.get("loc", ())[1:]) or "body" for e in errors]
    detail = "; ".join(f"{field}: {e.get('msg', 'invalid')}" for field, e in zip(fields, errors, strict=True))
    return _problem(422, detail or "invalid request", "invalid_input", field=fields[0] if fields else None)


async def _on_concurrent_write(request: Request, exc: Exception) -> JSONResponse:
    # Another directory process saved the same object first; our read model catches up within a second.
    return _problem(409, "the object was changed concurrently; retry", "concurrent_change")


async def _on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _problem(500, "internal error; the directory logged the details", "internal")


def create_http_app(
    directory: DirectoryApp,
    verifier: SessionVerifier,
    ready: Callable[[], bool],
    replay: Callable[[], Awaitable[dict[str, Any]]],
) -> FastAPI:
    app = FastAPI(title="Aqueduct directory", version="1")
    app.state.directory = directory
    app.state.verifier = verifier
    app.state.replay = replay
    app.add_exception_handler(DirectoryError, _on_directory_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(IntegrityError, _on_concurrent_write)
    app.add_exception_handler(Exception, _on_unexpected_error)
    for module in (organisation, tokens, catalog, admin):
        app.include_router(module.router)
    add_operational_routes(app, ready)
    return app
