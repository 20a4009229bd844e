"""The data plane's use cases: authenticate, route, admit, send upstream (retries, cooldown, fallbacks)
and record usage. HTTP specifics stay in the entrypoints; this layer takes and returns plain values.

Each step lives in its own module: ``admission`` (input checks, limits and budgets, the limit headers),
``routing`` (endpoint choice, retries, fallbacks, cooldown), ``usage`` (the usage event, settling what
admission reserved). ``Gateway`` puts them in a request's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aqueduct_libs.snapshot import TokenGrant
from aqueduct_libs.tokens import hash_token
from aqueduct_proxy.adapters.limiter import Limiter
from aqueduct_proxy.adapters.litellm_bridge import LiteLLMBridge
from aqueduct_proxy.adapters.publisher import UsagePublisher
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.adapters.upstream import Cooldown, UpstreamClient, UpstreamResponse
from aqueduct_proxy.application.admission import Gatekeeper
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.application.call import Call, GatewayConfig
from aqueduct_proxy.application.routing import ANTHROPIC_VERSION, Router
from aqueduct_proxy.application.usage import Meter, UsageRecorder
from aqueduct_proxy.domain.access import check_grant, model_allowed, visible_models
from aqueduct_proxy.domain.errors import ModelNotFoundError, ProxyError, shown
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.metrics import ProxyMetrics

__all__ = ["ANTHROPIC_VERSION", "Call", "Gateway", "GatewayConfig", "Meter", "Relay"]

Answer = TypeVar("Answer")
# Moves the upstream's answer to the client, with the limit headers, reporting to the meter how it ended.
Relay = Callable[[UpstreamResponse, dict[str, str], Meter], Awaitable[Answer]]


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        snapshot: Snapshot,
        upstream: UpstreamClient,
        publisher: UsagePublisher | None,
        limiter: Limiter | None,
        counter: TokenCounter,
        cooldown: Cooldown,
        metrics: ProxyMetrics,
        providers: LiteLLMBridge | None = None,
        upstream_timeout: float = 600.0,
        budgeting: Budgeting | None = None,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.upstream = upstream
        self.publisher = publisher
        self.limiter = limiter
        self.counter = counter
        self.cooldown = cooldown
        self.metrics = metrics
        self.providers = providers or LiteLLMBridge()
        self.upstream_timeout = upstream_timeout
        self.budgeting = budgeting or Budgeting(snapshot, None, metrics)
        self.gatekeeper = Gatekeeper(config, snapshot, limiter, counter, self.budgeting, metrics)
        self.router = Router(config, snapshot, upstream, cooldown, metrics, self.providers, upstream_timeout)
        self.usage = UsageRecorder(publisher, limiter, self.budgeting, metrics)
        # The steps one by one, for the routes that translate the answer and the batch worker. Whoever
        # admits a call must end it with ``record``, ``finish``, ``settle`` or ``release``.
        self.prepare = self.gatekeeper.prepare
        self.admit = self.gatekeeper.admit
        self.admit_requests = self.gatekeeper.admit_requests
        self.record = self.usage.record
        self.finish = self.usage.finish
        self.settle = self.usage.settle
        self.release = self.usage.release

    # -- who and where ---------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> TokenGrant:
        grant = None
        if authorization and authorization[:7].lower() == "bearer ":
            grant = self.snapshot.grants.get(hash_token(authorization[7:].strip(), self.config.secret_key))
        return check_grant(grant, self.snapshot, self.config.public_ui_url)

    def list_models(self, grant: TokenGrant) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m.name, "object": "model", "created": 0, "owned_by": m.endpoint}
                for m in visible_models(grant, self.snapshot)
            ],
        }

    def retrieve_model(self, grant: TokenGrant, name: str) -> dict[str, Any]:
        """One model of ``list_models`` by its name or an alias (the name asked is the ``id``), else 404."""
        model = self.snapshot.models.get(name)
        if model is None and name in self.snapshot.aliases:
            model = self.snapshot.models.get(self.snapshot.aliases[name])
        if (
            model is None
            or not model_allowed(grant, model.name)
            or model.endpoint not in self.snapshot.endpoints
        ):
            raise ModelNotFoundError(f"The model '{shown(name)}' does not exist.", param="model")
        return {"id": name, "object": "model", "created": 0, "owned_by": model.endpoint}

    # -- a request's life ------------------------------------------------------------------------------

    async def forward(
        self,
        call: Call,
        method: str,
        query: str,
        headers: dict[str, str],
        relay: Relay[Answer],
    ) -> Answer:
        """A prepared call, from admission to its usage event: its worst case reserved on its budgets
        and charged to its limits (or refused), sent upstream (fallbacks, retries, cooldown), the answer
        moved to the client by ``relay``, which tells the meter how it ended (the usage event, the
        settlement). Whatever it still holds when the answer is over (no usage came) is released.

        A call far from its limits, with no budget to reserve, goes upstream while its limits are
        checked (``Gatekeeper.admit_ahead``): nothing of the answer moves before the check admits it,
        and a refusal drops the upstream call. One Valkey round trip less before the first byte."""
        ahead = self.gatekeeper.admit_ahead(call)
        limit_headers = await self.admit(call) if ahead is None else {}
        try:
            try:
                upstream = await self.send(call, method, query, headers)
            except Exception:
                if ahead is not None:  # the limits' refusal is the answer, as when they come first
                    await _refusal_of(ahead)
                raise
            if ahead is not None:
                try:
                    limit_headers = await ahead
                except BaseException:
                    upstream.close()
                    raise
            return await relay(upstream, limit_headers, Meter(self.usage, call))
        finally:
            self.release(call)

    async def drain(self) -> None:
        """At a stop: what the calls still hold goes back (budget holds, the limits' credits)."""
        await self.usage.drain()
        await self.gatekeeper.drain()

    async def send(
        self, call: Call, method: str, query: str, forward_headers: dict[str, str]
    ) -> UpstreamResponse:
        """Open the upstream answer, retrying and falling back while nothing has reached the client.
        When none comes (UpstreamError, BadRequestError, cancelled), the call's budget hold goes."""
        try:
            return await self.router.send(call, method, query, forward_headers)
        except BaseException:
            self.release(call)
            raise


async def _refusal_of(ahead: asyncio.Task[dict[str, str]]) -> None:
    """Raise the limits' refusal of a call whose upstream call failed meanwhile (nothing if admitted)."""
    try:
        await ahead
    except ProxyError:
        raise
    except Exception:
        return  # (LimiterDown and the like: the upstream's failure is the answer then)
