"""A small MCP tool server for tests against the launched product: ``python -m tests.support.mcp_tools
--port N``. One tool, ``add(a, b)``; JSON answers (streamable HTTP, ``json_response``)."""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = MCPServer("conformance-tools", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    server.run("streamable-http", host="127.0.0.1", port=args.port, json_response=True)


if __name__ == "__main__":
    main()
