"""MCP tool calls count against the token's requests-per-minute limit, on the counter its model requests
use (the gateway's Valkey limiter), so a token's RPM holds across models and tools together."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.application.gateway import Gateway

__all__ = ["AdmitToolCalls", "tool_call_admission"]

# Charge ``calls`` tool calls of ``grant`` to MCP server ``server``; RateLimitedError (or
# LimiterUnavailableError when the limiter fails closed) when they do not all fit in the limit.
AdmitToolCalls = Callable[[TokenGrant, str, int], Awaitable[None]]


def tool_call_admission(gateway: Gateway) -> AdmitToolCalls:
    async def admit(grant: TokenGrant, server: str, calls: int) -> None:
        # The requests limit only: a tool call spends no model tokens, so a token whose tokens for this
        # minute are used up may still call tools. A JSON-RPC batch of n calls is n requests, all or none.
        await gateway.admit_requests(grant, calls)

    return admit
