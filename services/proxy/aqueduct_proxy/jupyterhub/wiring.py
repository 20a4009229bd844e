"""The JupyterHub token bridge as a feature of the proxy (``aqueduct_proxy.features``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from aiohttp import web
from nats.js import JetStreamContext
from prometheus_client import Counter

from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher
from aqueduct_proxy.application.gateway import Gateway
from aqueduct_proxy.entrypoints.front import serve_through_aiohttp_when
from aqueduct_proxy.jupyterhub.bridge import HubBridge
from aqueduct_proxy.jupyterhub.exchange import AuthExchangeClient
from aqueduct_proxy.jupyterhub.middleware import hub_token_middleware, is_hub_token
from aqueduct_proxy.jupyterhub.settings import HubBridgeSettings
from aqueduct_proxy.jupyterhub.users import USER_GRANT_KEYS

if TYPE_CHECKING:
    from aqueduct_proxy.bootstrap import Proxy

__all__ = ["JupyterHubFeature"]


@dataclass(frozen=True)
class JupyterHubFeature:
    """On with ``AQUEDUCT_PROXY_JUPYTERHUB_ENABLED``; ``auth_url`` is ``AQUEDUCT_AUTH_URL``."""

    settings: HubBridgeSettings
    auth_url: str
    name: ClassVar[str] = "jupyterhub"

    def wire(self, proxy: Proxy) -> HubBridge | None:
        return _wire(proxy.app, proxy.gateway, proxy.nc.jetstream(), self.settings, self.auth_url)


def _wire(
    app: web.Application,
    gateway: Gateway,
    js: JetStreamContext,
    settings: HubBridgeSettings,
    auth_url: str,
) -> HubBridge | None:
    """The bridge's middleware and its watch of the users' grants; nothing when the bridge is off.

    ``auth_url`` is ``AQUEDUCT_AUTH_URL`` (``settings.auth_url`` overrides it).
    """
    if not settings.enabled:
        return None
    client = AuthExchangeClient(settings.auth_url or auth_url, settings.timeout_seconds)
    exchanges = Counter(
        "aqueduct_proxy_jupyterhub_exchanges",
        "JupyterHub tokens checked at the auth service, by outcome (accepted, refused, unavailable)",
        ["outcome"],
        registry=gateway.metrics.registry,
    )
    bridge = HubBridge(
        gateway.snapshot,
        client.exchange,
        gateway.config.secret_key,
        cache_seconds=settings.cache_seconds,
        refusal_cache_seconds=settings.refusal_cache_seconds,
        user_wait_seconds=settings.user_wait_seconds,
        on_exchange=lambda outcome: exchanges.labels(outcome).inc(),
    )
    watcher = KVWatcher(
        js,
        names.AUTH_SNAPSHOT_BUCKET,
        bridge.on_user_put,
        bridge.on_user_delete,
        keys=USER_GRANT_KEYS,
    )

    async def start(app: web.Application) -> None:
        await client.start()
        watcher.start()

    async def stop(app: web.Application) -> None:
        await watcher.stop()
        await client.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    # Before anything that authenticates (the files feature's inlining middleware does): the features'
    # list puts this feature first.
    middleware = hub_token_middleware(bridge)
    app.middlewares.append(middleware)
    # The lean front end leaves requests with a hub token to aiohttp (this middleware).
    serve_through_aiohttp_when(
        app, middleware, lambda path, headers, raw: is_hub_token(headers.get("Authorization"))
    )
    return bridge
