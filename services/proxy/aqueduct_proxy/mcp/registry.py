"""The MCP servers of the auth snapshot (``mcp.<name>`` keys), mirrored in memory by a KV watch."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pydantic import ValidationError

from aqueduct_libs import names
from aqueduct_libs.snapshot import McpServerRoute

__all__ = ["McpRegistry", "McpServer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class McpServer:
    route: McpServerRoute
    auth_header: str | None  # read from the environment once, when the route arrives


class McpRegistry:
    """Feed it every auth snapshot entry (``on_snapshot_put``/``on_snapshot_delete``); it keeps the MCP ones."""

    def __init__(self) -> None:
        self._servers: dict[str, McpServer] = {}
        self._names: dict[str, str] = {}  # KV key -> server name, to apply deletes

    def get(self, name: str) -> McpServer | None:
        return self._servers.get(name)

    def on_snapshot_put(self, key: str, value: bytes) -> None:
        if not key.startswith(names.SNAPSHOT_MCP_PREFIX):
            return
        try:
            route = McpServerRoute.model_validate_json(value)
        except ValidationError as exc:
            log.error("ignoring malformed MCP server entry %s: %s", key, exc.errors()[:1])
            return
        key_secret = os.environ.get(route.api_key_env) if route.api_key_env else None
        if route.api_key_env and not key_secret:
            log.warning("MCP server %s: environment variable %s is not set", route.name, route.api_key_env)
        old = self._names.get(key)
        if old is not None and old != route.name:
            self._servers.pop(old, None)
        self._names[key] = route.name
        self._servers[route.name] = McpServer(route, f"Bearer {key_secret}" if key_secret else None)

    def on_snapshot_delete(self, key: str) -> None:
        name = self._names.pop(key, None)
        if name is not None:
            self._servers.pop(name, None)
