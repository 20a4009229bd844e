"""Rules of the MCP gateway: who may reach which server, DNS-rebinding checks, and reading tool calls
and their outcomes out of JSON-RPC traffic (whole JSON answers or server-sent events)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from aqueduct_libs.snapshot import McpServerRoute, TokenGrant
from aqueduct_proxy.domain.errors import ForbiddenError, ProxyError

__all__ = [
    "INTERNAL_ERROR",
    "RATE_LIMITED",
    "McpServerNotFoundError",
    "SseScanner",
    "ToolCall",
    "check_access",
    "check_rebinding",
    "matches",
    "outcome_status",
    "parse_patterns",
    "refusal",
    "tool_calls",
]


class McpServerNotFoundError(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "mcp_server_not_found"


class RebindingRefusedError(ForbiddenError):
    code = "origin_not_allowed"


def parse_patterns(value: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in value.split(",") if p.strip())


def matches(value: str, patterns: Iterable[str]) -> bool:
    """Exact match, ``*`` for anything, or ``base:*`` for ``base`` on any port."""
    for pattern in patterns:
        if pattern == "*" or value == pattern:
            return True
        if pattern.endswith(":*") and value.startswith(pattern[:-1]) and value[len(pattern) - 1 :].isdigit():
            return True
    return False


def check_rebinding(
    host: str | None, origin: str | None, hosts: tuple[str, ...], origins: tuple[str, ...]
) -> None:
    if not host or not matches(host, hosts):
        raise RebindingRefusedError(f"Host '{host}' is not allowed for MCP.", param="Host")
    if origin and not matches(origin, origins):
        raise RebindingRefusedError(f"Origin '{origin}' is not allowed for MCP.", param="Origin")


def check_access(grant: TokenGrant, server: McpServerRoute | None, name: str) -> McpServerRoute:
    if server is None:
        raise McpServerNotFoundError(f"The MCP server '{name}' does not exist.")
    if (grant.team_id is None or grant.team_id not in server.allowed_team_ids) and (
        name not in grant.allowed_mcp_servers
    ):
        raise ForbiddenError(f"This API key's team may not use the MCP server '{name}'.")
    return server


@dataclass(frozen=True, slots=True)
class ToolCall:
    request_id: Any
    tool: str


def tool_calls(body: bytes) -> list[ToolCall]:
    """The ``tools/call`` requests in a POSTed JSON-RPC message or batch (nothing for anything else)."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    messages = message if isinstance(message, list) else [message]
    calls = []
    for m in messages:
        if isinstance(m, dict) and m.get("method") == "tools/call" and "id" in m:
            params = m.get("params")
            params = params if isinstance(params, dict) else {}
            calls.append(ToolCall(m["id"], str(params.get("name", ""))))
    return calls


# JSON-RPC's range for implementation-defined server errors (-32000 to -32099), clear of the codes the
# MCP SDKs define; -32005 is "limit exceeded" as Ethereum's JSON-RPC (EIP-1474) defines it.
RATE_LIMITED = -32005
INTERNAL_ERROR = -32603


def refusal(body: bytes, status: int, message: str, data: dict[str, Any]) -> bytes:
    """The JSON-RPC answer to a POST refused before it reached the server: an error for each request
    in it (a batch gets a batch), so the client's pending calls fail with ``message``."""
    try:
        posted = orjson.loads(body)
    except orjson.JSONDecodeError:
        posted = None
    messages = posted if isinstance(posted, list) else [posted]
    code = RATE_LIMITED if status == 429 else INTERNAL_ERROR
    errors = [
        {"jsonrpc": "2.0", "id": m["id"], "error": {"code": code, "message": message, "data": data}}
        for m in messages
        if isinstance(m, dict) and "method" in m and "id" in m
    ]
    if isinstance(posted, list) or not errors:
        return orjson.dumps(errors)
    return orjson.dumps(errors[0])


def outcome_status(message: dict[str, Any]) -> int:
    """An HTTP-like status for a tool call's JSON-RPC answer, as usage reports show it."""
    error = message.get("error")
    if isinstance(error, dict):
        return 400 if error.get("code") in (-32600, -32601, -32602) else 500
    result = message.get("result")
    if isinstance(result, dict) and result.get("isError") is True:
        return 422  # the tool ran and reported a failure
    return 200


def responses_in(payload: Any) -> list[dict[str, Any]]:
    messages = payload if isinstance(payload, list) else [payload]
    return [m for m in messages if isinstance(m, dict) and "id" in m and ("result" in m or "error" in m)]


class SseScanner:
    """Finds JSON-RPC answers in a server-sent event stream fed chunk by chunk, as it passes through."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:  # end of one event
                if self._data:
                    try:
                        found += responses_in(orjson.loads(b"\n".join(self._data)))
                    except orjson.JSONDecodeError:
                        pass
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[5:].removeprefix(b" "))
        return found
