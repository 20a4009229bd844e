"""``/v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API on any endpoint.

A request goes through the gateway's one path (``prepare``, then ``Gateway.forward``), so authentication, model access, terms, budgets, limits and usage events are those of chat completions.
On an Anthropic endpoint the request and answer pass unchanged (the model id aside); on any other the
request is translated into chat completions and the answer, whole or streamed, back into Anthropic's.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from functools import partial
from typing import Any

import orjson
from aiohttp import web

from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.adapters.upstream import UpstreamResponse
from aqueduct_proxy.application.gateway import Call, Gateway, Meter
from aqueduct_proxy.domain.errors import BadRequestError, UpstreamError
from aqueduct_proxy.domain.usage import TokenUsage, usage_from_body
from aqueduct_proxy.wire.anthropic import (
    ChatToMessagesStream,
    chat_error_to_anthropic,
    chat_to_message,
    error_body,
    messages_problem,
    sse,
)
from aqueduct_proxy.wire.anthropic_usage import AnthropicTally, usage_from_anthropic
from aqueduct_proxy.wire.headers import forwarded_headers
from aqueduct_proxy.wire.relay import CUT_SHORT, events, read_whole, translated_stream, write_output

__all__ = ["anthropic_headers", "count_tokens", "messages"]

_PASSED_HEADERS = ("Content-Type", "request-id", "x-request-id")
_BROKEN_STREAM = sse("error", error_body(502, "The model server broke off the stream."))
_JSON = "application/json"


def anthropic_headers(request: web.Request) -> dict[str, str]:
    """What passes to the upstream: ``anthropic-version``/``-beta``, the SDK's ``x-stainless-*`` and test
    hints; never the client's own credentials (``x-api-key``, ``Authorization``)."""
    return forwarded_headers(request.headers, "anthropic-")


def _api_path(slug: str | None, tail: str) -> str:
    return f"/{slug}/v1/{tail}" if slug else f"/v1/{tail}"


def _prepare(
    gateway: Gateway, grant: TokenGrant, payload: dict[str, Any], api_path: str, slug: str | None
) -> Call:
    if (problem := messages_problem(payload)) is not None:
        raise BadRequestError(problem[1], param=problem[0])
    call = gateway.prepare(grant, api_path, "/chat/completions", payload=payload, slug=slug)
    call.anthropic, call.payload = payload, None  # the chat translation is made when an endpoint needs it
    return call


async def messages(
    request: web.Request, gateway: Gateway, grant: TokenGrant, payload: dict[str, Any], slug: str | None
) -> web.StreamResponse:
    if not isinstance(payload.get("max_tokens"), int) or payload["max_tokens"] < 1:
        raise BadRequestError("max_tokens: a positive integer is required.", param="max_tokens")
    call = _prepare(gateway, grant, payload, _api_path(slug, "messages"), slug)
    call.anthropic_path = "/v1/messages"
    return await gateway.forward(call, "POST", "", anthropic_headers(request), partial(_relay, request, call))


async def _relay(
    request: web.Request, call: Call, upstream: UpstreamResponse, limit_headers: dict[str, str], meter: Meter
) -> web.StreamResponse:
    if upstream.content_type == "text/event-stream" and upstream.status < 400:
        if call.native:
            return await _native_stream(request, upstream, limit_headers, meter)
        translator = ChatToMessagesStream(call.model, call.counted_input())
        return await translated_stream(request, upstream, limit_headers, meter, translator, _BROKEN_STREAM)
    return await _whole(call, upstream, limit_headers, meter)


async def count_tokens(
    request: web.Request, gateway: Gateway, grant: TokenGrant, payload: dict[str, Any], slug: str | None
) -> web.StreamResponse:
    """Anthropic endpoints count themselves; for others the gateway counts the prompt with its tokenizer.
    Either way it is a request of the token (authenticated, admitted, recorded) that spends no tokens."""
    call = _prepare(gateway, grant, payload, _api_path(slug, "messages/count_tokens"), slug)
    call.anthropic_path = "/v1/messages/count_tokens"
    call.free = True
    call.stream, call.input_tokens, call.uncounted, call.reserved_output = False, 0, None, 0
    assert call.route is not None
    if call.route.endpoint.provider != "anthropic":
        counted = _count(gateway, payload)
        limit_headers = await gateway.admit(call)
        await gateway.finish(call, 200, TokenUsage())
        return web.Response(
            body=orjson.dumps({"input_tokens": counted}), content_type=_JSON, headers=limit_headers
        )
    call.route = replace(call.route, fallbacks=())  # a chat endpoint cannot count for an Anthropic one
    return await gateway.forward(call, "POST", "", anthropic_headers(request), _relay_count)


async def _relay_count(
    upstream: UpstreamResponse, limit_headers: dict[str, str], meter: Meter
) -> web.StreamResponse:
    body = await read_whole(upstream, meter, TokenUsage())
    await meter.answered(upstream.status, TokenUsage())
    return web.Response(body=body, status=upstream.status, headers=_headers(upstream, limit_headers))


def _count(gateway: Gateway, payload: dict[str, Any]) -> int:
    counter = gateway.counter
    total = counter.count(payload)
    system = payload.get("system")
    if isinstance(system, str):
        total += counter.count_text(system)
    elif isinstance(system, list):
        total += counter.count({"messages": system})
    if payload.get("tools"):
        total += counter.count_text(orjson.dumps(payload["tools"]).decode())
    return total


def _headers(upstream: UpstreamResponse, extra: dict[str, str]) -> dict[str, str]:
    headers = {name: upstream.headers[name] for name in _PASSED_HEADERS if name in upstream.headers}
    headers.update(extra)
    return headers


async def _whole(call: Call, upstream: UpstreamResponse, extra: dict[str, str], meter: Meter) -> web.Response:
    body = await read_whole(upstream, meter)
    status = upstream.status
    data: Any = None
    if status < 400:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
    if call.native:
        usage = usage_from_anthropic(data.get("usage")) if isinstance(data, dict) else None
        await meter.answered(status, usage)
        return web.Response(body=body, status=status, headers=_headers(upstream, extra))
    if status >= 400:
        await meter.answered(status, None)
        return web.Response(
            body=chat_error_to_anthropic(status, body), status=status, content_type=_JSON, headers=extra
        )
    if not isinstance(data, dict):
        await meter.answered(502, None)
        raise UpstreamError("The model server's answer is not a chat completion.")
    usage = usage_from_body(data)
    await meter.answered(status, usage)
    answer = chat_to_message(data, call.model, usage)
    return web.Response(body=orjson.dumps(answer), content_type=_JSON, headers=extra)


async def _native_stream(
    request: web.Request, upstream: UpstreamResponse, extra: dict[str, str], meter: Meter
) -> web.StreamResponse:
    """Anthropic's events passed as they come; ``message_stop`` waits until the usage is accounted."""
    response = web.StreamResponse(status=upstream.status, headers=_headers(upstream, extra))
    response.headers["Cache-Control"] = "no-cache"
    tally = AnthropicTally()
    held = b""
    done = False
    try:
        await response.prepare(request)
        async for event in events(upstream):
            if tally.observe(event):
                held += event
            else:
                await write_output(response, meter, event)
        done = True
        # An error event the upstream sent mid-stream (overloaded) reached the client as it came.
        await meter.translation_ended(upstream.status, tally.usage, tally.chunks, cut_short=tally.errored)
        await response.write(held)
        await response.write_eof()
    except CUT_SHORT as exc:
        if not done:
            await meter.translation_ended(upstream.status, tally.usage, tally.chunks, cut_short=True)
            if not isinstance(exc, ConnectionResetError):
                with contextlib.suppress(Exception):
                    await response.write(_BROKEN_STREAM)
                    await response.write_eof()
    except asyncio.CancelledError:
        if not done:
            await meter.translation_ended(upstream.status, tally.usage, tally.chunks, cut_short=True)
        upstream.close()
        raise
    finally:
        if done:
            upstream.release()
        else:
            upstream.close()
    return response
