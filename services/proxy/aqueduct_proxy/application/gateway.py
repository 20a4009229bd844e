"""The data plane's use cases: authenticate, route, admit, send upstream (retries, cooldown, fallbacks)
and record usage. HTTP specifics stay in the entrypoints; this layer takes and returns plain values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from aqueduct_libs.request_id import current_request_id
from aqueduct_libs.snapshot import Limits, TokenGrant
from aqueduct_libs.tokens import hash_token
from aqueduct_proxy.adapters.budget_store import BudgetHold
from aqueduct_proxy.adapters.limiter import Admission, Counter, Limiter, LimiterDown, Rejection
from aqueduct_proxy.adapters.litellm_bridge import LiteLLMAnswer, LiteLLMBridge, ProviderError
from aqueduct_proxy.adapters.publisher import UsagePublisher
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.adapters.upstream import Cooldown, UpstreamClient, UpstreamResponse
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.domain.access import Route, check_grant, model_allowed, resolve_model, visible_models
from aqueduct_proxy.domain.errors import (
    BadRequestError,
    ForbiddenError,
    LimiterUnavailableError,
    ModelNotFoundError,
    RateLimitedError,
    RequestTooLargeError,
    UpstreamError,
)
from aqueduct_proxy.domain.snapshot import Endpoint, Snapshot
from aqueduct_proxy.domain.usage import TokenUsage
from aqueduct_proxy.metrics import ProxyMetrics
from aqueduct_proxy.wire.anthropic import messages_to_chat

__all__ = ["ANTHROPIC_VERSION", "Call", "Gateway", "GatewayConfig"]

log = logging.getLogger(__name__)

# Routes whose streams accept stream_options.include_usage (the Responses API reports usage on its own).
_STREAM_OPTIONS_ROUTES = frozenset({"/chat/completions", "/completions"})
# Sent to Anthropic endpoints when the client named no version of the Messages API.
ANTHROPIC_VERSION = "2023-06-01"
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# The fields the gateway itself reads (to count tokens); the upstream validates everything else.
_REQUIRED_FIELDS: dict[str, tuple[str, tuple[type, ...], str]] = {
    "/chat/completions": ("messages", (list,), "'messages' must be a non-empty array of message objects."),
    "/completions": ("prompt", (str, list), "'prompt' must be a string or an array."),
    "/embeddings": ("input", (str, list), "'input' must be a string or an array."),
}


def _shape_problem(upstream_path: str, payload: dict[str, Any]) -> tuple[str, str] | None:
    rule = _REQUIRED_FIELDS.get(upstream_path)
    if rule is None:
        return None
    field, kinds, message = rule
    value = payload.get(field)
    if not isinstance(value, kinds) or (isinstance(value, list) and not value):
        return field, message
    if field == "messages" and isinstance(value, list) and not all(isinstance(m, dict) for m in value):
        return field, message
    return None


_ERROR_TYPE = {"requests": "requests", "input_tokens": "tokens", "output_tokens": "tokens"}
_HEADER_DIMENSION = {"requests": "requests", "input_tokens": "tokens", "output_tokens": "output-tokens"}
_RETRYABLE_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    secret_key: bytes
    public_ui_url: str
    fail_open: bool = True
    retries: int = 2
    retry_backoff: float = 0.2


@dataclass(slots=True)
class Call:
    """One request on its way through the gateway."""

    grant: TokenGrant
    api_path: str  # the public route, e.g. "/v1/chat/completions"
    upstream_path: str  # appended to the endpoint's base URL, e.g. "/chat/completions"
    endpoint: Endpoint
    route: Route | None = None
    payload: dict[str, Any] | None = None  # JSON body
    form: list[tuple[str, Any]] | None = None  # multipart fields, in order
    raw: bytes | None = None  # any other body, forwarded as it came (endpoint routes only)
    stream: bool = False
    client_wants_usage: bool = False
    input_tokens: int = 0
    reserved_output: int = 0
    admission: Admission | None = None
    budget_hold: BudgetHold | None = None  # the worst case reserved on its budgets, until settled
    # The answer's x-request-id (the one of the request being served), carried into the usage event.
    request_id: str | None = field(default_factory=current_request_id)
    # Clients of Anthropic's Messages API: their request as sent, and its path on Anthropic endpoints
    # ("/v1/messages" or "/v1/messages/count_tokens"). ``native`` tells whether the endpoint that answers
    # speaks it too (the answer passes unchanged) or chat completions (``payload`` holds the translation).
    anthropic: dict[str, Any] | None = None
    anthropic_path: str = ""
    native: bool = False
    started: float = field(default_factory=time.perf_counter)
    occurred_at: datetime = field(default_factory=_now)

    @property
    def model(self) -> str:
        return self.route.model if self.route else ""


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
        self._background: set[asyncio.Task[None]] = set()

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

    def prepare(
        self,
        grant: TokenGrant,
        api_path: str,
        upstream_path: str,
        *,
        payload: dict[str, Any] | None = None,
        form: list[tuple[str, Any]] | None = None,
        raw: bytes | None = None,
        slug: str | None = None,
        model_required: bool = True,
    ) -> Call:
        model: Any = None
        if payload is not None:
            model = payload.get("model")
        elif form is not None:
            model = next((v for k, v in form if k == "model" and isinstance(v, str)), None)
        if model is None and not model_required and slug is not None:
            endpoint = self.snapshot.endpoints.get(slug)
            if endpoint is None:
                raise ModelNotFoundError(f"The endpoint '{slug}' does not exist.")
            if grant.allowed_models is not None and not any(
                m.endpoint == slug and model_allowed(grant, m.name) for m in self.snapshot.models.values()
            ):
                raise ForbiddenError(f"This API key may not use any model of the endpoint '{slug}'.")
            return Call(grant, api_path, upstream_path, endpoint, payload=payload, form=form, raw=raw)
        if not isinstance(model, str) or not model:
            raise BadRequestError("You must provide a model parameter.", param="model")
        if payload is not None and (problem := _shape_problem(upstream_path, payload)):
            raise BadRequestError(problem[1], param=problem[0])
        route = resolve_model(grant, self.snapshot, model, slug)
        call = Call(grant, api_path, upstream_path, route.endpoint, route=route, payload=payload, form=form)
        if payload is not None:
            call.stream = payload.get("stream") is True
            options = payload.get("stream_options")
            call.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
            cap = next((payload[k] for k in _OUTPUT_CAPS if isinstance(payload.get(k), int)), 0)
            call.reserved_output = max(0, cap)
            if (
                call.stream
                or (self.limiter is not None and self._limits_input(call))
                or self.budgeting.applies(call)
            ):
                call.input_tokens = self.counter.count(payload)
        return call

    # -- limits ----------------------------------------------------------------------------------------

    def _limit_sets(self, call: Call) -> list[tuple[str, Limits]]:
        sets = [("t", call.grant.limits)]
        if call.route is not None and call.route.model_limits is not None:
            sets.append((f"m:{call.route.model}", call.route.model_limits))
        return sets

    def _limits_input(self, call: Call) -> bool:
        return any(limits.input_tokens_per_minute is not None for _, limits in self._limit_sets(call))

    def _counters(self, call: Call) -> list[Counter]:
        # One hash tag per token keeps all of a request's counters in one cluster slot (one Lua script).
        prefix = f"aq:rl:{{{call.grant.token_id}}}"
        counters = []
        for scope, limits in self._limit_sets(call):
            if limits.requests_per_minute is not None:
                counters.append(Counter(f"{prefix}:{scope}:rpm", "requests", limits.requests_per_minute, 1))
            if limits.input_tokens_per_minute is not None:
                counters.append(
                    Counter(
                        f"{prefix}:{scope}:itpm",
                        "input_tokens",
                        limits.input_tokens_per_minute,
                        call.input_tokens,
                    )
                )
            if limits.output_tokens_per_minute is not None:
                counters.append(
                    Counter(
                        f"{prefix}:{scope}:otpm",
                        "output_tokens",
                        limits.output_tokens_per_minute,
                        call.reserved_output,
                    )
                )
        return counters

    async def admit(self, call: Call) -> dict[str, str]:
        """Reserve the request's worst-case cost on its budgets (or BudgetExhaustedError), then charge
        its limits: the answer's ``x-ratelimit-*`` headers, or RateLimitedError. Whoever admits a call
        must end it with ``record``, ``finish``, ``settle`` or ``release``."""
        # The budget reservation is sent first and travels with the limits' check (one wait for both).
        reservation = self.budgeting.begin(call)
        counters = self._counters(call) if self.limiter is not None else []
        if not counters:
            if reservation is not None:
                await self.budgeting.complete(call, reservation)
            return {}
        try:
            admission = await self._charge(counters)
        except BaseException:
            if reservation is not None and reservation.sent is not None:
                with contextlib.suppress(Exception):  # the refusal that counts is the limit's
                    await self.budgeting.complete(call, reservation)
                self.release(call)
            raise
        if reservation is not None:
            try:
                await self.budgeting.complete(call, reservation)
            except BaseException:
                if admission is not None and self.limiter is not None:
                    await self.limiter.settle(admission, 0)  # no output will come
                raise
        if admission is None:
            return {}
        call.admission = admission
        return _admission_headers(admission)

    def release(self, call: Call) -> None:
        """End a call that produced no usage (refused, failed upstream, abandoned): its budget hold goes.
        Does nothing once the call was recorded."""
        self.budgeting.settle(call, None)

    async def settle(self, call: Call, usage: TokenUsage | None) -> None:
        """Settle a call whose usage event someone else publishes (the batch worker): output-token
        limits and budgets, from the usage the event carries."""
        self.budgeting.settle(call, usage)
        if self._settles(call):
            assert self.limiter is not None and call.admission is not None
            await self.limiter.settle(call.admission, usage.output_tokens if usage else 0)

    async def admit_requests(self, grant: TokenGrant, count: int = 1) -> dict[str, str]:
        """Charge ``count`` requests to the token's requests-per-minute counter only, all or none: for
        calls that spend no model tokens (MCP tool calls), on the counter its model requests use."""
        limit = grant.limits.requests_per_minute
        if self.limiter is None or limit is None or count < 1:
            return {}
        counter = Counter(f"aq:rl:{{{grant.token_id}}}:t:rpm", "requests", limit, count)
        admission = await self._charge([counter])
        return {} if admission is None else _admission_headers(admission)

    async def _charge(self, counters: list[Counter]) -> Admission | None:
        """The admission, None when the limiter is down and limits fail open, or RateLimitedError."""
        assert self.limiter is not None
        for counter in counters:
            if counter.cost > counter.limit:
                raise RequestTooLargeError(
                    _too_large_message(counter),
                    type=_ERROR_TYPE[counter.dimension],
                    headers={"x-should-retry": "false"},
                )
        try:
            result = await self.limiter.admit(counters)
        except LimiterDown as exc:
            self.metrics.limiter_failures.inc()
            if self.config.fail_open:
                return None
            raise LimiterUnavailableError(
                "Rate limits cannot be checked right now; try again shortly."
            ) from exc
        if isinstance(result, Rejection):
            self.metrics.limit_rejections.labels(result.counter.dimension).inc()
            raise RateLimitedError(
                _rejection_message(result),
                type=_ERROR_TYPE[result.counter.dimension],
                headers=_rejection_headers(result),
            )
        return result

    # -- upstream --------------------------------------------------------------------------------------

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
        """Open the upstream answer, retrying and falling back while nothing has reached the client.
        When none comes (UpstreamError, BadRequestError, cancelled), the call's budget hold goes."""
        try:
            return await self._send(call, method, query, forward_headers)
        except BaseException:
            self.release(call)
            raise

    async def _send(
        self, call: Call, method: str, query: str, forward_headers: dict[str, str]
    ) -> UpstreamResponse:
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

    # -- usage -----------------------------------------------------------------------------------------

    def record(
        self,
        call: Call,
        status: int,
        usage: TokenUsage | None,
        *,
        ttft: float | None = None,
        cut_short: bool = False,
        estimated_output: int = 0,
    ) -> None:
        """Publish the usage event (off the response path); settle output-token limits in the background."""
        usage = self._publish_usage(call, status, usage, ttft, cut_short, estimated_output)
        self.budgeting.settle(call, usage)
        if self._settles(call):
            assert self.limiter is not None and call.admission is not None
            task = asyncio.create_task(self.limiter.settle(call.admission, usage.output_tokens))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def finish(
        self,
        call: Call,
        status: int,
        usage: TokenUsage | None,
        *,
        ttft: float | None = None,
        estimated_output: int = 0,
    ) -> None:
        """``record``, with the output tokens settled before the answer ends: the client's next request,
        on whichever replica, then sees them (this is what keeps output-token limits exact)."""
        usage = self._publish_usage(call, status, usage, ttft, False, estimated_output)
        self.budgeting.settle(call, usage)
        if self._settles(call):
            assert self.limiter is not None and call.admission is not None
            await self.limiter.settle(call.admission, usage.output_tokens)

    def _settles(self, call: Call) -> bool:
        return (
            self.limiter is not None
            and call.admission is not None
            and any(c.dimension == "output_tokens" for c in call.admission.counters)
        )

    def _publish_usage(
        self,
        call: Call,
        status: int,
        usage: TokenUsage | None,
        ttft: float | None,
        cut_short: bool,
        estimated_output: int,
    ) -> TokenUsage:
        if usage is None:
            usage = TokenUsage(call.input_tokens, estimated_output, 0)
        grant = call.grant
        latency = time.perf_counter() - call.started
        # The UsageRecorded contract (schema version 1), serialised directly: building and dumping the
        # pydantic model cost ~100 µs per request; tests check the bytes validate as UsageRecorded.
        event_id = os.urandom(16).hex()
        payload = orjson.dumps(
            {
                "schema_version": 1,
                "event_id": event_id,
                "occurred_at": call.occurred_at,
                "kind": "model",
                "token_id": grant.token_id,
                "user_id": grant.user_id,
                "service_account_id": grant.service_account_id,
                "team_id": grant.team_id,
                "org_id": grant.org_id,
                "endpoint": call.route.endpoint.slug if call.route else call.endpoint.slug,
                "model": call.model,
                "route": call.api_path,
                "status_code": status,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cached_tokens": usage.cached_tokens,
                "cache_write_5m_tokens": usage.cache_write_5m_tokens,
                "cache_write_1h_tokens": usage.cache_write_1h_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "alias": call.route.alias if call.route else None,
                "latency_ms": round(latency * 1000, 3),
                "ttft_ms": round(ttft * 1000, 3) if ttft is not None else None,
                "streamed": call.stream,
                "cut_short": cut_short,
                "request_id": call.request_id,
            }
        )
        if self.publisher is not None:
            self.publisher.record_json(event_id, payload)
        if usage.input_tokens or usage.output_tokens:
            self.metrics.count_tokens(call.model, usage.input_tokens, usage.output_tokens)
        return usage

    async def drain(self) -> None:
        await self.budgeting.drain()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _admission_headers(admission: Admission) -> dict[str, str]:
    """``x-ratelimit-limit-*`` and ``-remaining-*``: per dimension, the counter with the least left."""
    headers: dict[str, str] = {}
    for counter, used in zip(admission.counters, admission.used, strict=True):
        name = _HEADER_DIMENSION[counter.dimension]
        remaining = str(max(0, counter.limit - used))
        previous = headers.get(f"x-ratelimit-remaining-{name}")
        if previous is None or int(remaining) < int(previous):
            headers[f"x-ratelimit-limit-{name}"] = str(counter.limit)
            headers[f"x-ratelimit-remaining-{name}"] = remaining
    return headers


def _rejection_message(rejection: Rejection) -> str:
    counter = rejection.counter
    what = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}
    return (
        f"Rate limit reached: {counter.limit} {what[counter.dimension]} per minute "
        f"(used {rejection.used}). Please try again in {rejection.retry_after}s."
    )


def _too_large_message(counter: Counter) -> str:
    what = {"requests": "requests", "input_tokens": "input tokens", "output_tokens": "output tokens"}
    return (
        f"Request too large: {what[counter.dimension]} per minute: Limit {counter.limit}, "
        f"Requested {counter.cost}. Send a smaller request (fewer input tokens or a lower max_tokens)."
    )


def _rejection_headers(rejection: Rejection) -> dict[str, str]:
    counter = rejection.counter
    name = _HEADER_DIMENSION[counter.dimension]
    return {
        "Retry-After": str(rejection.retry_after),
        f"x-ratelimit-limit-{name}": str(counter.limit),
        f"x-ratelimit-remaining-{name}": str(max(0, counter.limit - rejection.used)),
        f"x-ratelimit-reset-{name}": f"{rejection.retry_after}s",
    }
