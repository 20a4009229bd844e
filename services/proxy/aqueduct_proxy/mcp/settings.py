"""``AQUEDUCT_PROXY_MCP_*``: the MCP gateway's own settings (read once, in the wiring function)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["McpSettings"]


class McpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_PROXY_MCP_", extra="ignore")

    # DNS-rebinding protection: comma-separated Host values the gateway answers to ("name:*" allows any
    # port, "*" any host), and Origins a browser may call from. A request without Origin is not a
    # browser's cross-site request and passes; one with an Origin not listed gets 403.
    allowed_hosts: str = "127.0.0.1:*,localhost:*,[::1]:*,127.0.0.1,localhost,[::1]"
    allowed_origins: str = "http://127.0.0.1:*,http://localhost:*,http://[::1]:*"
    connect_timeout_seconds: float = 10.0
    # At start, how long to wait for the registered MCP servers to load from the auth snapshot.
    startup_wait_seconds: float = 10.0
    # Tool calls may run long and the GET stream stays open: no total timeout, only this read gap.
    read_timeout_seconds: float = 600.0
