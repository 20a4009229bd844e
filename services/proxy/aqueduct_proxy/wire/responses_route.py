"""``/v1/responses`` for endpoints without the Responses API: translated to chat completions and back.

Whether an endpoint has it is its ``responses`` setting (``true`` by default for provider ``openai``;
every LiteLLM-served provider is translated). The request goes through the gateway's one path
(``Gateway.forward``) like every other route.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from aiohttp import web

from aqueduct_proxy.adapters.upstream import UpstreamResponse
from aqueduct_proxy.application.gateway import Call, Gateway, Meter
from aqueduct_proxy.domain.errors import BadRequestError, UpstreamError
from aqueduct_proxy.domain.snapshot import Endpoint
from aqueduct_proxy.domain.usage import usage_from_body
from aqueduct_proxy.wire.relay import read_whole, translated_stream
from aqueduct_proxy.wire.responses import (
    ChatToResponsesStream,
    chat_to_response,
    responses_problem,
    responses_to_chat,
)

__all__ = ["has_responses_api", "translated_responses"]

_BROKEN_STREAM = ChatToResponsesStream.broken("The model server broke off the stream.")


def has_responses_api(endpoint: Endpoint) -> bool:
    return endpoint.provider == "openai" and endpoint.route.responses


async def translated_responses(
    request: web.Request, gateway: Gateway, call: Call, payload: dict[str, Any], headers: dict[str, str]
) -> web.StreamResponse:
    if (problem := responses_problem(payload)) is not None:
        raise BadRequestError(problem[1], param=problem[0])
    call.payload, call.upstream_path = responses_to_chat(payload), "/chat/completions"
    return await gateway.forward(call, "POST", "", headers, partial(_relay, request, call, payload))


async def _relay(
    request: web.Request,
    call: Call,
    payload: dict[str, Any],
    upstream: UpstreamResponse,
    limit_headers: dict[str, str],
    meter: Meter,
) -> web.StreamResponse:
    if upstream.content_type == "text/event-stream" and upstream.status < 400:
        translator = ChatToResponsesStream(call.model, payload)
        return await translated_stream(request, upstream, limit_headers, meter, translator, _BROKEN_STREAM)
    body = await read_whole(upstream, meter)
    if upstream.status >= 400:  # already OpenAI's error format
        await meter.answered(upstream.status, None)
        return web.Response(
            body=body, status=upstream.status, content_type="application/json", headers=limit_headers
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        await meter.answered(502, None)
        raise UpstreamError("The model server's answer is not a chat completion.")
    usage = usage_from_body(data)
    await meter.answered(upstream.status, usage)
    answer = chat_to_response(data, call.model, payload, usage)
    return web.Response(body=orjson.dumps(answer), content_type="application/json", headers=limit_headers)
