"""Relaying an upstream answer to the client: whole, or server-sent events chunk by chunk. Only bytes
move here; the meter (``application.usage.Meter``) is told which events pass and how the answer ended."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from aqueduct_proxy.adapters.upstream import UpstreamResponse
from aqueduct_proxy.application.usage import Meter
from aqueduct_proxy.domain.errors import UpstreamError
from aqueduct_proxy.domain.usage import usage_from_body

__all__ = ["Streams", "relay"]

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
    request: Any,
    upstream: UpstreamResponse,
    extra: dict[str, str],
    meter: Meter,
    streams: Streams | None = None,
) -> web.StreamResponse:
    """``request`` is aiohttp's, or the lean front end's connection with its own ``streams`` (the classes
    of a stream held until its first event and of a plain one; ``prepare(request)``, ``write``,
    ``write_eof`` as aiohttp's). A whole answer is a ``web.Response`` for whoever serves the request."""
    if upstream.content_type == "text/event-stream":
        return await _relay_stream(request, upstream, extra, meter, (streams or _AIOHTTP)[0])
    if upstream.content_type not in _READ_WHOLE and upstream.status < 400:
        return await _relay_bytes(request, upstream, extra, meter, (streams or _AIOHTTP)[1])
    try:
        body = await upstream.read()
    except _CUT_SHORT as exc:
        upstream.close()
        meter.broke_off()
        raise UpstreamError("The model server broke off its answer.") from exc
    finally:
        upstream.release()
    usage = None
    if upstream.status < 400 and upstream.content_type == "application/json":
        try:
            usage = usage_from_body(orjson.loads(body))
        except orjson.JSONDecodeError:
            usage = None
    await meter.answered(upstream.status, usage)
    return web.Response(body=body, status=upstream.status, headers=_headers(upstream, extra))


async def _relay_bytes(
    request: Any,
    upstream: UpstreamResponse,
    extra: dict[str, str],
    meter: Meter,
    stream: type[web.StreamResponse],
) -> web.StreamResponse:
    """Audio, images and other binary answers: passed on as they arrive (no usage in them to read)."""
    response = stream(status=upstream.status, headers=_headers(upstream, extra))
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
        meter.passed(upstream.status, cut_short=cut_short)
    return response


def _next_event_end(pending: bytes, start: int) -> tuple[int, int]:
    """End of the first complete server-sent event in ``pending`` from ``start``, and its separator's
    length."""
    end = pending.find(b"\n\n", start)
    if end >= 0:
        return end, 2
    end = pending.find(b"\r\n\r\n", start)
    return end, 4


class _EventStream(web.StreamResponse):
    """An event stream whose head leaves with its first event: one write, and one wake-up of the client
    instead of two, before the first chunk. aiohttp's own ``web.Response`` holds its head back this way
    (its version is pinned); the relay sends the head alone when the first event is not there yet."""

    _send_headers_immediately = False


# The classes of a stream whose head waits for its first event, and of a plain stream.
Streams = tuple[type[web.StreamResponse], type[web.StreamResponse]]
_AIOHTTP: Streams = (_EventStream, web.StreamResponse)


def _arrived(upstream: UpstreamResponse) -> bool:
    """Whether body bytes of the upstream's answer are here already (the lean client's answers tell)."""
    return bool(getattr(upstream.content, "buffered", 0))


async def _relay_stream(
    request: Any,
    upstream: UpstreamResponse,
    extra: dict[str, str],
    meter: Meter,
    stream: type[web.StreamResponse],
) -> web.StreamResponse:
    response = stream(status=upstream.status, headers=_headers(upstream, extra))
    response.headers["Cache-Control"] = "no-cache"
    cut_short = True
    pending = done = b""
    try:
        await response.prepare(request)
        held = _arrived(upstream)
        if not held:  # the model is still thinking: the client learns at once that the stream began
            await response.write(b"")
        passes = meter.passes
        async for data in upstream.content.iter_any():
            pending += data
            out = []
            start = 0
            end, separator = _next_event_end(pending, start)
            while end >= 0:
                event, start = pending[start : end + separator], end + separator
                if event.startswith(b"data: [DONE]"):
                    done = event  # held back until the usage is accounted (see Meter.stream_ended)
                elif passes(event):
                    if meter.ttft is None:  # the first output leaves at once, the rest of a read after it
                        await response.write(event)
                        meter.first_output()
                    else:
                        out.append(event)
                if start == len(pending):  # the usual read: whole events, nothing left to look for
                    break
                end, separator = _next_event_end(pending, start)
            pending = pending[start:]
            if out:
                await response.write(b"".join(out))
            elif held and meter.ttft is None:  # no whole event came with the head: the head goes alone
                await response.write(b"")
            held = False
        cut_short = False
        await meter.stream_ended(upstream.status, cut_short=False)
        await response.write(done + pending if pending.strip() else done)
        await response.write_eof()
    except ConnectionResetError:
        if cut_short:  # the client went away mid-stream; recorded with what was produced so far
            await meter.stream_ended(upstream.status, cut_short=True)
    except _CUT_SHORT:
        await meter.stream_ended(upstream.status, cut_short=True)
        # The upstream broke off: say so in the stream (the SDK raises on an error event), then end it.
        with contextlib.suppress(Exception):
            await response.write(_BROKEN_STREAM)
            await response.write_eof()
    except asyncio.CancelledError:
        if cut_short:
            await meter.stream_ended(upstream.status, cut_short=True)
        upstream.close()
        raise
    finally:
        if cut_short:
            upstream.close()
        else:
            upstream.release()
    return response
