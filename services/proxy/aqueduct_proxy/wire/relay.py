"""Relaying answers a translation sits in front of: reading whole answers, server-sent events one by one,
and a translated stream (chat completion chunks in, the client's format out), with the usage accounted
through the gateway before the stream's last event, as the chat completions relay does."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from aqueduct_proxy.adapters.upstream import UpstreamResponse
from aqueduct_proxy.application.gateway import Call, Gateway
from aqueduct_proxy.domain.errors import UpstreamError
from aqueduct_proxy.domain.usage import StreamTally, TokenUsage

__all__ = ["CUT_SHORT", "Stream", "Translator", "events", "read_whole", "translated_stream"]

CUT_SHORT = (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)


class Translator(Protocol):
    def feed(self, chunk: dict[str, Any]) -> bytes: ...

    def end(self, usage: TokenUsage | None) -> bytes: ...


async def read_whole(
    gateway: Gateway, call: Call, upstream: UpstreamResponse, usage: TokenUsage | None = None
) -> bytes:
    """The whole answer; a connection the upstream broke off is recorded (cut short, with ``usage``: None
    for the gateway's own count of the prompt) and a 502."""
    try:
        return await upstream.read()
    except CUT_SHORT as exc:
        upstream.close()
        gateway.record(call, 502, usage, cut_short=True)
        raise UpstreamError("The model server broke off its answer.") from exc
    finally:
        upstream.release()


def _next_event_end(pending: bytes) -> tuple[int, int]:
    end = pending.find(b"\n\n")
    if end >= 0:
        return end, 2
    return pending.find(b"\r\n\r\n"), 4


async def events(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """The upstream's server-sent events, one complete event (with its separator) at a time."""
    pending = b""
    async for data in upstream.content.iter_any():
        pending += data
        end, separator = _next_event_end(pending)
        while end >= 0:
            yield pending[: end + separator]
            pending = pending[end + separator :]
            end, separator = _next_event_end(pending)
    if pending.strip():
        yield pending


class Stream:
    """What both stream relays share: the response, time to first token, cut-short handling."""

    def __init__(
        self, request: web.Request, gateway: Gateway, call: Call, upstream: UpstreamResponse
    ) -> None:
        self.request, self.gateway, self.call, self.upstream = request, gateway, call, upstream
        self.ttft: float | None = None

    async def write(self, response: web.StreamResponse, data: bytes) -> None:
        if data:
            await response.write(data)
            if self.ttft is None:
                self.ttft = time.perf_counter() - self.call.started

    async def record(self, usage: TokenUsage | None, estimated: int, *, cut_short: bool) -> None:
        call = self.call
        if self.ttft is not None:
            self.gateway.metrics.ttft.labels(call.api_path).observe(self.ttft)
        if usage is not None and not usage.input_tokens:
            usage.input_tokens = call.input_tokens
        if cut_short and usage is not None:
            # A stream cut short reports a provisional output count (Anthropic's message_start says 1):
            # what was relayed is at least that much.
            usage.output_tokens = max(usage.output_tokens, estimated)
        if cut_short:
            self.gateway.record(
                call, self.upstream.status, usage, ttft=self.ttft, cut_short=True, estimated_output=estimated
            )
        else:
            await self.gateway.finish(
                call, self.upstream.status, usage, ttft=self.ttft, estimated_output=estimated
            )


async def translated_stream(
    request: web.Request,
    gateway: Gateway,
    call: Call,
    upstream: UpstreamResponse,
    extra: dict[str, str],
    translator: Translator,
    broken: bytes,
) -> web.StreamResponse:
    """A chat completions stream, translated chunk by chunk into the client's format by ``translator``;
    ``broken`` is the event that tells the client the upstream broke off."""
    headers = {**extra, "Content-Type": "text/event-stream"}
    response = web.StreamResponse(status=upstream.status, headers=headers)
    response.headers["Cache-Control"] = "no-cache"
    stream, tally = Stream(request, gateway, call, upstream), StreamTally(False)
    done = False
    try:
        await response.prepare(request)
        async for event in events(upstream):
            data_at = event.find(b"data:")
            if data_at < 0 or event.startswith(b"data: [DONE]"):
                continue
            tally.observe(event)
            try:
                chunk = orjson.loads(event[data_at + 5 :].strip())
            except orjson.JSONDecodeError:
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:  # an upstream (or LiteLLM) error event mid-stream
                raise aiohttp.ClientPayloadError("the model server sent an error event")
            await stream.write(response, translator.feed(chunk))
        done = True
        await stream.record(tally.usage, tally.chunks, cut_short=False)
        await response.write(translator.end(tally.usage))
        await response.write_eof()
    except CUT_SHORT as exc:
        if not done:
            await stream.record(tally.usage, tally.chunks, cut_short=True)
            if not isinstance(exc, ConnectionResetError):
                with contextlib.suppress(Exception):
                    await response.write(broken)
                    await response.write_eof()
    except asyncio.CancelledError:
        if not done:
            await stream.record(tally.usage, tally.chunks, cut_short=True)
        upstream.close()
        raise
    finally:
        if done:
            upstream.release()
        else:
            upstream.close()
    return response
