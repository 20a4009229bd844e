"""The one wiring function: settings, the shared HTTP client, the session keys, the web app; and ``run()``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from aqueduct_libs.ops import configure_logging
from aqueduct_libs.service import LifespanService
from aqueduct_libs.sessions import SessionVerifier
from aqueduct_ui.adapters.api import create_http_client
from aqueduct_ui.adapters.jwks import KeyRing
from aqueduct_ui.application.roles import CurrentRoles
from aqueduct_ui.entrypoints.web.app import create_app
from aqueduct_ui.entrypoints.web.context import WebContext
from aqueduct_ui.entrypoints.web.cookies import CookieKit
from aqueduct_ui.entrypoints.web.render import create_templates
from aqueduct_ui.settings import UISettings

__all__ = ["bootstrap", "run", "serve"]

log = logging.getLogger("aqueduct_ui")


async def _load_keys_until_ready(ctx: WebContext) -> None:
    """The KV watch normally delivers the keys at once; if the bus has none yet, ask the auth service."""
    while not ctx.keyring.ready:
        await asyncio.sleep(1.0)
        if not ctx.keyring.ready:
            await ctx.keyring.fetch_over_http()


async def bootstrap(settings: UISettings, *, use_bus: bool = True) -> LifespanService:
    """The web app; its lifespan opens the HTTP client to the APIs and watches the session keys
    (``use_bus=False``: fetched from the auth service only, for tests without a bus)."""
    common = settings.common
    verifier = SessionVerifier()
    ctx = WebContext(
        settings=settings,
        common=common,
        cookies=CookieKit(
            common.secret_key_bytes,
            # Behind a TLS-terminating proxy the request arrives as http: the public URL decides.
            settings.cookie_secure or common.public_ui_url.startswith("https://"),
            settings.refresh_cookie_max_age,
        ),
        # Evaluated at call time: the HTTP client behind ``ctx.auth`` exists only once started.
        keyring=KeyRing(verifier, lambda: ctx.auth.jwks()),
        templates=create_templates(),
        roles=CurrentRoles(settings.roles_ttl),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.http = create_http_client(settings.api_timeout)
        if use_bus:
            await ctx.keyring.start(common.nats_url, common.nats_replicas)
        loader = asyncio.create_task(_load_keys_until_ready(ctx))
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            await ctx.keyring.stop()
            await ctx.http.aclose()
            ctx.http = None

    app = create_app(ctx, lifespan)
    return LifespanService(app, ctx.ready)


async def serve(settings: UISettings) -> None:
    common = settings.common
    service = await bootstrap(settings)
    config = uvicorn.Config(
        service.app,
        host=settings.host,
        port=settings.port,
        log_level=common.log_level.lower(),
        proxy_headers=True,
        access_log=False,
    )
    await uvicorn.Server(config).serve()  # the app's lifespan starts and stops the service


def run() -> None:
    settings = UISettings()
    configure_logging("ui", settings.common.log_level)
    asyncio.run(serve(settings))
