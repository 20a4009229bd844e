"""MCP tool calls count against the token's requests-per-minute limit, on the counter its model requests
use (the gateway's Valkey limiter), so a token's RPM holds across models and tools together."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aqueduct_libs.snapshot import EndpointRoute, Limits, TokenGrant
from aqueduct_proxy.application.gateway import Call, Gateway
from aqueduct_proxy.domain.snapshot import Endpoint

__all__ = ["AdmitToolCalls", "tool_call_admission"]

# Charge ``calls`` tool calls of ``grant`` to MCP server ``server``; RateLimitedError (or
# LimiterUnavailableError when the limiter fails closed) when one is over the limit.
AdmitToolCalls = Callable[[TokenGrant, str, int], Awaitable[None]]

# A Call names an endpoint; the limiter never reads it, and a tool call has none of a model's.
_NO_ENDPOINT = Endpoint(
    slug="", base_url="", provider="mcp", auth_header=None, route=EndpointRoute(slug="", url="")
)


def tool_call_admission(gateway: Gateway) -> AdmitToolCalls:
    async def admit(grant: TokenGrant, server: str, calls: int) -> None:
        rpm = grant.limits.requests_per_minute
        if gateway.limiter is None or rpm is None:
            return
        # The requests limit only: a tool call spends no model tokens, so a token whose tokens for this
        # minute are used up may still call tools. Same token id, so the same counter key.
        requests_only = grant.model_copy(
            update={"limits": Limits(requests_per_minute=rpm), "model_limits": {}}
        )
        for _ in range(calls):  # one request each, as a JSON-RPC batch of n calls is n requests
            await gateway.admit(Call(requests_only, f"/mcp/{server}", "", _NO_ENDPOINT))

    return admit
