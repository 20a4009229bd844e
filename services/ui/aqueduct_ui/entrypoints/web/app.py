"""The FastAPI application: middleware, routers, static files, error mapping, operational routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from aqueduct_libs.ops import add_operational_routes
from aqueduct_ui.entrypoints.web.context import WebContext
from aqueduct_ui.entrypoints.web.deps import csrf_guard
from aqueduct_ui.entrypoints.web.errors import install_error_handlers
from aqueduct_ui.entrypoints.web.routes import admin, auth, models, teams, tokens, usage, users
from aqueduct_ui.entrypoints.web.session import SessionMiddleware

__all__ = ["create_app"]

_STATIC = Path(__file__).resolve().parents[2] / "static"

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]] | Callable[[FastAPI], AsyncIterator[None]]


def create_app(ctx: WebContext, lifespan: Lifespan | None = None) -> FastAPI:
    app = FastAPI(
        title="Aqueduct UI",
        lifespan=lifespan,  # type: ignore[arg-type]
        dependencies=[Depends(csrf_guard)],
        docs_url=None,
        redoc_url=None,
    )
    app.state.ctx = ctx
    app.add_middleware(SessionMiddleware, ctx=ctx)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")
    for module in (auth, tokens, teams, models, usage, users, admin):
        app.include_router(module.router)
    install_error_handlers(app)
    add_operational_routes(app, ready=ctx.ready)
    return app
