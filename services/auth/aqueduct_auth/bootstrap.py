"""The one wiring function of the auth service, and ``run()`` (what ``python -m aqueduct_auth`` does)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware

from aqueduct_auth.adapters.attempts import SharedAttemptLimiter
from aqueduct_auth.adapters.jupyterhub import JupyterHubClient
from aqueduct_auth.adapters.keys import KeyRing
from aqueduct_auth.adapters.nats_bus import (
    DirectoryClient,
    EventPublisher,
    RevokedSessionsPublisher,
    publish_jwks,
)
from aqueduct_auth.adapters.oidc import OidcClient, OidcConfig
from aqueduct_auth.adapters.passwords import Passwords
from aqueduct_auth.adapters.store import AuthStore
from aqueduct_auth.application.jupyterhub import JupyterHubBridge
from aqueduct_auth.application.local_accounts import LocalAccounts
from aqueduct_auth.application.sessions import SessionPolicy, Sessions
from aqueduct_auth.domain.rate_limit import AttemptLimiter
from aqueduct_auth.entrypoints import oidc_routes, routes
from aqueduct_auth.entrypoints.container import Container
from aqueduct_auth.entrypoints.errors import add_error_handlers
from aqueduct_auth.settings import AuthSettings
from aqueduct_libs.broker import new_broker
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.ops import add_operational_routes, configure_logging
from aqueduct_libs.service import LifespanService
from aqueduct_libs.sessions import watch_revoked_sessions
from aqueduct_libs.settings import CommonSettings

__all__ = ["bootstrap", "run", "serve"]

log = logging.getLogger(__name__)


async def bootstrap(settings: AuthSettings) -> LifespanService:
    """The auth service: an ASGI app whose lifespan connects to the bus and wires everything."""
    common = settings.common
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        folder = common.data_dir / "auth"
        keys = KeyRing.load(folder, settings.signing_key.get_secret_value())
        store = AuthStore(settings.database_url or f"sqlite:///{folder / 'auth.sqlite'}")
        broker = new_broker(common.nats_url, "aqueduct-auth")
        await broker.start()  # publishes auth events, asks the directory; consumes only KV buckets
        js = broker.connection.jetstream()
        await ensure_topology(js, common.nats_replicas)

        async def publish(jwks: dict[str, Any]) -> None:
            await publish_jwks(js, jwks)

        events = EventPublisher(broker)
        directory = DirectoryClient(broker, settings.directory_timeout)
        hub = JupyterHubClient(settings.jupyterhub_api_url) if settings.jupyterhub_api_url else None
        revoked = RevokedSessionsPublisher(js)
        sessions = Sessions(
            store,
            keys,
            directory,
            events,
            SessionPolicy(
                settings.access_token_ttl,
                settings.refresh_token_ttl,
                settings.exchange_code_ttl,
                common.secret_key_bytes,
                settings.refresh_reuse_grace_seconds,
            ),
            revoked,
        )
        local_accounts = LocalAccounts(
            store,
            Passwords(),
            sessions,
            events,
            SharedAttemptLimiter(
                js, AttemptLimiter(settings.sign_in_attempts_per_username, settings.sign_in_window_seconds)
            ),
            SharedAttemptLimiter(
                js, AttemptLimiter(settings.sign_in_attempts_per_ip, settings.sign_in_window_seconds)
            ),
        )
        container = Container(
            sessions=sessions,
            local_accounts=local_accounts,
            keys=keys,
            publish_jwks=publish,
            public_ui_url=common.public_ui_url,
            trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies),
            oidc=_oidc_client(settings, common),
            jupyterhub=JupyterHubBridge(
                hub,
                directory,
                events,
                keys,
                common.secret_key_bytes,
                settings.access_token_ttl,
                settings.jupyterhub_cache_seconds,
                settings.jupyterhub_required_scope,
                settings.jupyterhub_admin_group,
            )
            if hub
            else None,
        )
        await publish(keys.jwks())
        # This service's own admin routes refuse ended sessions too, whichever auth process ended them.
        revoked_watch = watch_revoked_sessions(js, container.verifier)
        revoked_watch.start()
        # The bearer's current roles for the admin routes (the directory's user entries).
        roles_watch = container.roles.follow(js)
        roles_watch.start()
        if settings.bootstrap_admin_username and settings.bootstrap_admin_password.get_secret_value():
            created = await local_accounts.ensure_bootstrap_admin(
                settings.bootstrap_admin_username, settings.bootstrap_admin_password.get_secret_value()
            )
            if created:
                log.info("created the bootstrap admin account %r", settings.bootstrap_admin_username)
        housekeeping = asyncio.create_task(_purge_periodically(store), name="auth-purge")
        app.state.container = container
        state["nc"] = broker.connection
        state["revoked_watch"] = revoked_watch
        log.info("auth service ready; signing key %s published", keys.current.kid)
        try:
            yield
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            await revoked.flush()
            await events.flush()
            await revoked_watch.stop()
            await roles_watch.stop()
            await broker.stop()  # drains the connection
            store.close()
            if hub:
                await hub.close()

    app = FastAPI(title="Aqueduct auth", version="1", lifespan=lifespan)
    # Holds only the OIDC state, nonce and PKCE verifier between the redirect and the callback.
    app.add_middleware(
        SessionMiddleware,
        secret_key=hashlib.sha256(b"aqueduct-auth-oidc-state:" + common.secret_key_bytes).hexdigest(),
        session_cookie="aqueduct_auth_sso",
        max_age=15 * 60,
        same_site="lax",
        https_only=common.auth_url.startswith("https://"),
    )
    add_error_handlers(app)
    app.include_router(routes.router)
    app.include_router(oidc_routes.router)

    def ready() -> bool:
        return bool(state.get("nc") and state["nc"].is_connected and state["revoked_watch"].ready.is_set())

    add_operational_routes(app, ready=ready)
    return LifespanService(app, ready)


async def _purge_periodically(store: AuthStore, every_seconds: float = 3600) -> None:
    while True:
        try:
            store.purge_expired(time.time())
        except Exception:  # the database is briefly unavailable: try again next round
            log.exception("purging expired sessions failed")
        await asyncio.sleep(every_seconds)


def _oidc_client(settings: AuthSettings, common: CommonSettings) -> OidcClient | None:
    if not settings.oidc_issuer:
        return None
    return OidcClient(
        OidcConfig(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret.get_secret_value(),
            redirect_uri=settings.oidc_redirect_uri or f"{common.auth_url.rstrip('/')}/auth/oidc/callback",
            scopes=settings.oidc_scopes,
            groups_claim=settings.oidc_groups_claim,
            admin_group=settings.oidc_admin_group,
            trust_email=settings.oidc_trust_email,
            post_logout_redirect_uri=(
                (settings.oidc_post_logout_redirect_uri or f"{common.public_ui_url.rstrip('/')}/login")
                if settings.oidc_end_provider_session
                else ""
            ),
        )
    )


async def serve(settings: AuthSettings) -> None:
    common = settings.common
    service = await bootstrap(settings)
    config = uvicorn.Config(
        service.app,
        host=settings.host,
        port=settings.port,
        log_level=common.log_level.lower(),
        proxy_headers=False,
    )
    await uvicorn.Server(config).serve()  # the app's lifespan starts and stops the service


def run() -> None:
    settings = AuthSettings()
    configure_logging("auth", settings.common.log_level)
    asyncio.run(serve(settings))
