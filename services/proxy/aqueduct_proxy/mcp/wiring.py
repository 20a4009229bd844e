"""The MCP gateway (``/mcp/{name}``) as a feature of the proxy (``aqueduct_proxy.features``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from aiohttp import web
from nats.js import JetStreamContext

from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher
from aqueduct_libs.events import UsageRecorded
from aqueduct_proxy.application.gateway import Gateway
from aqueduct_proxy.mcp.http import setup_mcp
from aqueduct_proxy.mcp.limits import tool_call_admission
from aqueduct_proxy.mcp.registry import McpRegistry
from aqueduct_proxy.mcp.settings import McpSettings

if TYPE_CHECKING:
    from aqueduct_proxy.bootstrap import Proxy

__all__ = ["McpFeature"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class McpFeature:
    settings: McpSettings
    name: ClassVar[str] = "mcp"

    def wire(self, proxy: Proxy) -> McpRegistry:
        return _wire(proxy.app, proxy.gateway, proxy.nc.jetstream(), self.settings)


def _wire(app: web.Application, gateway: Gateway, js: JetStreamContext, settings: McpSettings) -> McpRegistry:
    """The MCP routes, and a watch of the auth snapshot's ``mcp.*`` entries for as long as the app runs."""
    registry = McpRegistry()
    watcher = KVWatcher(js, names.AUTH_SNAPSHOT_BUCKET, registry.on_snapshot_put, registry.on_snapshot_delete)

    async def start_watch(app: web.Application) -> None:
        watcher.start()
        # Serve no MCP request from an empty registry (a 404 for a server that exists): wait for the
        # initial replay, within reason; while the bus is away the proxy starts anyway.
        try:
            await asyncio.wait_for(watcher.ready.wait(), settings.startup_wait_seconds)
        except TimeoutError:
            log.warning(
                "MCP servers not loaded after %.0fs; serving, they load when the bus answers",
                settings.startup_wait_seconds,
            )

    async def stop_watch(app: web.Application) -> None:
        await watcher.stop()

    def record(event: UsageRecorded) -> None:
        if gateway.publisher is not None:
            gateway.publisher.record(event)
        else:
            log.warning("no usage publisher: MCP tool call %s on %s not recorded", event.tool, event.endpoint)

    app.on_startup.append(start_watch)
    app.on_cleanup.append(stop_watch)
    setup_mcp(app, gateway.authenticate, registry, record, settings, tool_call_admission(gateway))
    return registry
