"""Sending a call upstream: the endpoint that serves it (its route, then its fallbacks, skipping endpoints
in cooldown), retries with backoff while nothing has reached the client, and the body each kind of
endpoint takes (OpenAI-compatible, Anthropic's Messages API as it came, other providers via LiteLLM)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

from aqueduct_proxy.adapters.litellm_bridge import LiteLLMAnswer, LiteLLMBridge, ProviderError
from aqueduct_proxy.adapters.upstream import Cooldown, UpstreamClient, UpstreamResponse
from aqueduct_proxy.application.call import Call, GatewayConfig
from aqueduct_proxy.domain.access import Route, resolve_model
from aqueduct_proxy.domain.errors import BadRequestError, ForbiddenError, ModelNotFoundError, UpstreamError
from aqueduct_proxy.domain.snapshot import Endpoint, Snapshot
from aqueduct_proxy.metrics import ProxyMetrics
from aqueduct_proxy.wire.anthropic import messages_to_chat

__all__ = ["ANTHROPIC_VERSION", "Router"]

log = logging.getLogger(__name__)

# Routes whose streams accept stream_options.include_usage (the Responses API reports usage on its own).
_STREAM_OPTIONS_ROUTES = frozenset({"/chat/completions", "/completions"})
# Sent to Anthropic endpoints when the client named no version of the Messages API.
ANTHROPIC_VERSION = "2023-06-01"
_RETRYABLE_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


class Router:
    def __init__(
        self,
        config: GatewayConfig,
        snapshot: Snapshot,
        upstream: UpstreamClient,
        cooldown: Cooldown,
        metrics: ProxyMetrics,
        providers: LiteLLMBridge,
        upstream_timeout: float,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.upstream = upstream
        self.cooldown = cooldown
        self.metrics = metrics
        self.providers = providers
        self.upstream_timeout = upstream_timeout

    def _candidates(self, call: Call) -> list[Route | None]:
        if call.route is None:
            return [None]
        routes: list[Route | None] = [call.route]
        for name in call.route.fallbacks:
            try:
                routes.append(resolve_model(call.grant, self.snapshot, name))
            except (ModelNotFoundError, ForbiddenError):
                log.warning("fallback model %s of %s is not usable; skipped", name, call.route.model)
        return routes

    def _body(self, call: Call, route: Route | None) -> bytes | aiohttp.FormData | None:
        if call.payload is not None:
            payload = call.payload
            if route is not None and route.upstream_model:
                payload = {**payload, "model": route.upstream_model}
            if call.stream and call.upstream_path in _STREAM_OPTIONS_ROUTES:
                options = payload.get("stream_options")
                payload = {
                    **payload,
                    "stream_options": {
                        **(options if isinstance(options, dict) else {}),
                        "include_usage": True,
                    },
                }
            return orjson.dumps(payload)
        if call.form is not None:
            form = aiohttp.FormData(quote_fields=False)
            for name, value in call.form:
                if name == "model" and route is not None and route.upstream_model:
                    value = route.upstream_model
                if isinstance(value, str):
                    form.add_field(name, value)
                else:  # an uploaded file
                    form.add_field(
                        name,
                        value.file.read() if hasattr(value, "file") else value,
                        filename=getattr(value, "filename", None),
                        content_type=getattr(value, "content_type", None),
                    )
                    if hasattr(value, "file"):
                        value.file.seek(0)
            return form
        return call.raw

    async def send(
        self, call: Call, method: str, query: str, forward_headers: dict[str, str]
    ) -> UpstreamResponse:
        """Open the upstream answer, retrying and falling back while nothing has reached the client;
        UpstreamError when none comes."""
        candidates = self._candidates(call)
        last = len(candidates) - 1
        error: BaseException | None = None
        for index, route in enumerate(candidates):
            endpoint = route.endpoint if route is not None else call.endpoint
            if index < last and self.cooldown.cooling(endpoint.slug):
                continue
            if call.anthropic is not None:
                call.native = endpoint.provider == "anthropic"
                if not call.native and call.payload is None:
                    call.payload = messages_to_chat(call.anthropic)  # once, for the first chat endpoint
            url = endpoint.base_url + call.upstream_path + (f"?{query}" if query else "")
            headers = dict(forward_headers)
            if endpoint.auth_header:
                headers["Authorization"] = endpoint.auth_header
            for attempt in range(self.config.retries + 1):
                final = index == last and attempt == self.config.retries
                try:
                    if call.anthropic is not None and endpoint.provider == "anthropic":
                        response: Any = await self._anthropic(call, route, endpoint, method, forward_headers)
                    elif endpoint.provider == "openai":
                        response = await self.upstream.request(
                            method, url, headers=headers, data=self._body(call, route)
                        )
                    else:
                        response = await self._via_litellm(call, route, endpoint)
                except _RETRYABLE_ERRORS as exc:
                    error = exc
                    self.metrics.upstream_errors.labels(endpoint.slug, type(exc).__name__).inc()
                    self.cooldown.failed(endpoint.slug)
                else:
                    if response.status in (401, 403) and (endpoint.provider == "openai" or call.native):
                        # The upstream refused the gateway's own key: a 401 would tell the client that
                        # their Aqueduct token is wrong. Retrying the same key is pointless; a fallback
                        # on another endpoint may still serve.
                        response.release()
                        self.metrics.upstream_errors.labels(endpoint.slug, str(response.status)).inc()
                        self.cooldown.failed(endpoint.slug)
                        error = PermissionError(endpoint.slug)
                        break
                    if response.status != 429 and response.status < 500:
                        self.cooldown.succeeded(endpoint.slug)
                        if route is not None and route is not call.route:
                            call.route = route  # served by a fallback: account it under that model
                        return response
                    self.metrics.upstream_errors.labels(endpoint.slug, str(response.status)).inc()
                    self.cooldown.failed(endpoint.slug)
                    if final:
                        return response  # nothing left to try: the client sees the upstream's answer
                    response.release()
                if attempt < self.config.retries:
                    await asyncio.sleep(self.config.retry_backoff * (2**attempt))
        if isinstance(error, PermissionError):
            raise UpstreamError(
                f"The model provider refused the gateway's credentials for the endpoint '{error}'; "
                "an administrator must check the endpoint's API key."
            )
        if isinstance(error, TimeoutError):
            raise UpstreamError("The model server did not answer in time.") from error
        raise UpstreamError(f"The model server could not be reached ({type(error).__name__}).") from error

    async def _anthropic(
        self,
        call: Call,
        route: Route | None,
        endpoint: Endpoint,
        method: str,
        forward_headers: dict[str, str],
    ) -> UpstreamResponse:
        """The client's Messages request, unchanged but for the model id, to an Anthropic endpoint."""
        assert call.anthropic is not None
        payload = call.anthropic
        if route is not None and route.upstream_model:
            payload = {**payload, "model": route.upstream_model}
        headers = {"anthropic-version": ANTHROPIC_VERSION, **forward_headers}
        if endpoint.api_key:
            headers["x-api-key"] = endpoint.api_key
        return await self.upstream.request(
            method, endpoint.root_url + call.anthropic_path, headers=headers, data=orjson.dumps(payload)
        )

    async def _via_litellm(self, call: Call, route: Route | None, endpoint: Endpoint) -> LiteLLMAnswer:
        if call.upstream_path != "/chat/completions" or call.payload is None:
            raise BadRequestError(
                f"The endpoint '{endpoint.slug}' ({endpoint.provider}) serves chat completions only."
            )
        payload = call.payload
        if route is not None and route.upstream_model:
            payload = {**payload, "model": route.upstream_model}
        try:
            return await self.providers.chat(
                endpoint.provider, endpoint.base_url, endpoint.api_key, payload, self.upstream_timeout
            )
        except ProviderError as exc:
            body = orjson.dumps(
                {"error": {"message": exc.message, "type": "upstream_error", "param": None, "code": None}}
            )
            return LiteLLMAnswer(exc.status, "application/json", body=body)
