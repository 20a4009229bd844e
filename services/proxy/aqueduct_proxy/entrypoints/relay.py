"""Relaying an upstream answer to the client: whole, or server-sent events chunk by chunk."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import orjson
from aiohttp import web

from aqueduct_proxy.adapters.upstream import UpstreamResponse
from aqueduct_proxy.application.gateway import Call, Gateway
from aqueduct_proxy.domain.errors import UpstreamError
from aqueduct_proxy.domain.usage import StreamTally, usage_from_body

__all__ = ["relay"]

_READ_WHOLE = frozenset({"application/json", "text/plain", "text/html"})
# (Not the upstream's x-request-id: the answer carries the gateway's, which the upstream also received.)
_PASSED_HEADERS = ("Content-Type", "Content-Disposition", "openai-processing-ms")
# The client went away, or the upstream broke off: either way the stream is cut short.
_CUT_SHORT = (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)
_BROKEN_STREAM = (
    b"data: "
    + orjson.dumps(
        {
            "error": {
                "message": "The model server broke off the stream.",
                "type": "server_error",
                "param": None,
                "code": "upstream_stream_broken",
            }
        }
    )
    + b"\n\n"
)


def _headers(upstream: UpstreamResponse, extra: dict[str, str]) -> dict[str, str]:
    headers = {name: upstream.headers[name] for name in _PASSED_HEADERS if name in upstream.headers}
    headers.update(extra)
    return headers


async def relay(
    request: web.Request,
    gateway: Gateway,
    call: Call,
    upstream: UpstreamResponse,
    extra: dict[str, str],
) -> web.StreamResponse:
    if upstream.content_type == "text/event-stream":
        return await _relay_stream(request, gateway, call, upstream, extra)
    if upstream.content_type not in _READ_WHOLE and upstream.status < 400:
        return await _relay_bytes(request, gateway, call, upstream, extra)
    try:
        body = await upstream.read()
    except _CUT_SHORT as exc:
        upstream.close()
        gateway.record(call, 502, None, cut_short=True)
        raise UpstreamError("The model server broke off its answer.") from exc
    finally:
        upstream.release()
    usage = None
    if upstream.status < 400 and upstream.content_type == "application/json":
        try:
            usage = usage_from_body(orjson.loads(body))
        except orjson.JSONDecodeError:
            usage = None
    await gateway.finish(call, upstream.status, usage)
    return web.Response(body=body, status=upstream.status, headers=_headers(upstream, extra))


async def _relay_bytes(
    request: web.Request,
    gateway: Gateway,
    call: Call,
    upstream: UpstreamResponse,
    extra: dict[str, str],
) -> web.StreamResponse:
    """Audio, images and other binary answers: passed on as they arrive (no usage in them to read)."""
    response = web.StreamResponse(status=upstream.status, headers=_headers(upstream, extra))
    cut_short = True
    try:
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            await response.write(data)
        await response.write_eof()
        cut_short = False
    except _CUT_SHORT:
        pass
    finally:
        if cut_short:
            upstream.close()
        else:
            upstream.release()
        gateway.record(call, upstream.status, None, cut_short=cut_short)
    return response


def _next_event_end(pending: bytes) -> tuple[int, int]:
    """End of the first complete server-sent event in ``pending`` and its separator's length."""
    end = pending.find(b"\n\n")
    if end >= 0:
        return end, 2
    end = pending.find(b"\r\n\r\n")
    return end, 4


async def _relay_stream(
    request: web.Request,
    gateway: Gateway,
    call: Call,
    upstream: UpstreamResponse,
    extra: dict[str, str],
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, headers=_headers(upstream, extra))
    response.headers["Cache-Control"] = "no-cache"
    tally = StreamTally(call.client_wants_usage)
    ttft: float | None = None
    cut_short = True
    pending = done = b""
    try:
        await response.prepare(request)
        async for data in upstream.content.iter_any():
            pending += data
            out = []
            end, separator = _next_event_end(pending)
            while end >= 0:
                event, pending = pending[: end + separator], pending[end + separator :]
                if event.startswith(b"data: [DONE]"):
                    done = event  # held back until the usage is accounted (see Gateway.finish)
                elif tally.observe(event):
                    out.append(event)
                end, separator = _next_event_end(pending)
            if out:
                await response.write(b"".join(out))
                if ttft is None:
                    ttft = time.perf_counter() - call.started
        cut_short = False
        await _record_stream(gateway, call, upstream.status, tally, ttft, cut_short=False)
        await response.write(done + pending if pending.strip() else done)
        await response.write_eof()
    except ConnectionResetError:
        if cut_short:  # the client went away mid-stream; recorded with what was produced so far
            await _record_stream(gateway, call, upstream.status, tally, ttft, cut_short=True)
    except _CUT_SHORT:
        await _record_stream(gateway, call, upstream.status, tally, ttft, cut_short=True)
        # The upstream broke off: say so in the stream (the SDK raises on an error event), then end it.
        with contextlib.suppress(Exception):
            await response.write(_BROKEN_STREAM)
            await response.write_eof()
    except asyncio.CancelledError:
        if cut_short:
            await _record_stream(gateway, call, upstream.status, tally, ttft, cut_short=True)
        upstream.close()
        raise
    finally:
        if cut_short:
            upstream.close()
        else:
            upstream.release()
    return response


async def _record_stream(
    gateway: Gateway, call: Call, status: int, tally: StreamTally, ttft: float | None, *, cut_short: bool
) -> None:
    if ttft is not None:
        gateway.metrics.ttft.labels(call.api_path).observe(ttft)
    usage = tally.usage
    if usage is not None and not usage.input_tokens:
        usage.input_tokens = call.input_tokens
    if cut_short:  # nothing waits for the settlement: the answer is over already
        gateway.record(call, status, usage, ttft=ttft, cut_short=True, estimated_output=tally.chunks)
    else:
        await gateway.finish(call, status, usage, ttft=ttft, estimated_output=tally.chunks)
