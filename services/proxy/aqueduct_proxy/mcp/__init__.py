"""The MCP gateway: registered MCP servers behind the gateway's API tokens, at ``/mcp/{name}``."""

from aqueduct_proxy.mcp.http import setup_mcp
from aqueduct_proxy.mcp.registry import McpRegistry
from aqueduct_proxy.mcp.settings import McpSettings

__all__ = ["McpRegistry", "McpSettings", "setup_mcp"]
