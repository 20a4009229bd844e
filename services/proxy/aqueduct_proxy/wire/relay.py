"""Relaying answers a translation sits in front of: reading whole answers, server-sent events one by one,
and a translated stream (chat completion chunks in, the client's format out), with the usage accounted
through the meter before the stream's last event, as the chat completions relay does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import web

from aqueduct_proxy.adapters.upstream import UpstreamResponse
from aqueduct_proxy.application.usage import Meter
from aqueduct_proxy.domain.errors import UpstreamError
from aqueduct_proxy.domain.usage import StreamTally, TokenUsage

__all__ = ["CUT_SHORT", "Translator", "events", "read_whole", "translated_stream", "write_output"]

CUT_SHORT = (ConnectionResetError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)


class Translator(Protocol):
    def feed(self, chunk: dict[str, Any]) -> bytes: ...

    def end(self, usage: TokenUsage | None) -> bytes: ...


async def read_whole(upstream: UpstreamResponse, meter: Meter, usage: TokenUsage | None = None) -> bytes:
    """The whole answer; a connection the upstream broke off is recorded (cut short, with ``usage``: None
    for the gateway's own count of the prompt) and a 502."""
    try:
        return await upstream.read()
    except CUT_SHORT as exc:
        upstream.close()
        meter.broke_off(usage)
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


async def write_output(response: web.StreamResponse, meter: Meter, data: bytes) -> None:
    if data:
        await response.write(data)
        meter.first_output()


async def translated_stream(
    request: web.Request,
    upstream: UpstreamResponse,
    extra: dict[str, str],
    meter: Meter,
    translator: Translator,
    broken: bytes,
) -> web.StreamResponse:
    """A chat completions stream, translated chunk by chunk into the client's format by ``translator``;
    ``broken`` is the event that tells the client the upstream broke off."""
    headers = {**extra, "Content-Type": "text/event-stream"}
    response = web.StreamResponse(status=upstream.status, headers=headers)
    response.headers["Cache-Control"] = "no-cache"
    tally = StreamTally(False)
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
            await write_output(response, meter, translator.feed(chunk))
        done = True
        await meter.translation_ended(upstream.status, tally.usage, tally.chunks, cut_short=False)
        await response.write(translator.end(tally.usage))
        await response.write_eof()
    except CUT_SHORT as exc:
        if not done:
            await meter.translation_ended(upstream.status, tally.usage, tally.chunks, cut_short=True)
            if not isinstance(exc, ConnectionResetError):
                with contextlib.suppress(Exception):
                    await response.write(broken)
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
