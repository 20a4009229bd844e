"""The lean front end: the proxy's hot routes served without aiohttp's server machinery, every other
request by aiohttp on the same connection.

aiohttp's server spends 130 to 190 CPU-µs on a streamed request (its request handler, request and
response objects, the writer; ``bench/http_server.py``), before the first chunk; an asyncio ``Protocol``
with httptools' parser spends about 60. So each connection starts with this protocol. It serves a plain
``POST`` of a JSON body to ``/v1/chat/completions``, ``/v1/completions`` or ``/v1/embeddings``, or to the
same under ``/{slug}/v1/`` (HTTP/1.1, ``Content-Length``, no query), through the same gateway code as
aiohttp's routes (``entrypoints.http``): the same authentication, body rules, request id, errors, metrics
and relay. ``/v1/messages`` (its translation writes aiohttp responses) and the rest stay aiohttp's.

Anything else, and anything unusual, goes to aiohttp: at a request boundary the connection is handed to
aiohttp's request handler (``transport.set_protocol``), which is given the bytes of that request and all
after it, and keeps the connection from then on. Unusual is: another method or path, a query, HTTP/1.0,
``Transfer-Encoding``, ``Expect``, ``Upgrade``, a ``Connection`` header other than ``keep-alive`` or
``close``, a content type other than JSON's, a non-ASCII or malformed head, a line longer than the
header limit (aiohttp answers 431), a body over the size limit (aiohttp answers 413), and whatever a
middleware of a feature would act on (``serve_through_aiohttp_when``). If the application has a
middleware this module does not know, the front end stays off (``entrypoints.http.front_end_rules``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_nodelay
from multidict import CIMultiDict

from aqueduct_libs.request_id import HEADER as REQUEST_ID_HEADER
from aqueduct_libs.request_id import enter_request, leave_request, request_id_of
from aqueduct_proxy.application.gateway import Gateway
from aqueduct_proxy.domain.errors import ProxyError
from aqueduct_proxy.entrypoints.relay import Streams, relay

if TYPE_CHECKING:
    from aiohttp.web_server import Server

__all__ = ["FRONT_END", "FrontEnd", "FrontEndRules", "LeanStream", "serve_through_aiohttp_when"]

log = logging.getLogger(__name__)

# A route: the gateway's api path, the upstream's path, the endpoint's slug (``/{slug}/v1/...``) and the
# route's name in the metrics (aiohttp's canonical one).
_Route = tuple[str, str, str | None, str]
_ROUTES: dict[bytes, _Route] = {
    b"/v1/chat/completions": ("/v1/chat/completions", "/chat/completions", None, "/v1/chat/completions"),
    b"/v1/completions": ("/v1/completions", "/completions", None, "/v1/completions"),
    b"/v1/embeddings": ("/v1/embeddings", "/embeddings", None, "/v1/embeddings"),
}
# ``/{slug}/v1/...`` of the same three (the directory's slugs; any other spelling is aiohttp's to decode).
_SLUG_ROUTE = re.compile(rb"/([a-z0-9][a-z0-9_-]{0,62})/v1/(chat/completions|completions|embeddings)")
_JSON_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})
_CONNECTION_VALUES = frozenset({"keep-alive", "close"})
# Headers whose mere presence sends a request to aiohttp.
_UNUSUAL = frozenset({"transfer-encoding", "expect", "upgrade", "te", "trailer"})
_MAX_HEADERS = 100  # aiohttp's limit is 128: a request near it is aiohttp's to judge
_HEAD_END = b"\r\n\r\n"
# Bytes received and not yet served above which a connection stops reading (a pipelining client).
_HIGH_WATER = 256 * 1024

# Tells whether a request (its path, headers and body) must go to aiohttp, where a middleware acts on it.
NeedsAiohttp = Callable[[str, CIMultiDict[str], bytes], bool]


# Its limits, and the app's middlewares it knows with, for each, the test of the requests that middleware
# acts on (those it leaves to aiohttp); set by ``entrypoints.http.build_app``.
FRONT_END: web.AppKey[dict[str, Any]] = web.AppKey("front_end", dict)


def serve_through_aiohttp_when(app: web.Application, middleware: Any, needs_aiohttp: NeedsAiohttp) -> None:
    """A feature's ``middleware`` acts on the requests ``needs_aiohttp`` tells (path, headers, body): the
    lean front end leaves those to aiohttp. Without this, that middleware keeps the front end off."""
    app[FRONT_END]["known"][middleware] = needs_aiohttp


class FrontEndRules:
    """What the front end needs of the application: the gateway, the limits, and the features' tests."""

    def __init__(
        self,
        gateway: Gateway,
        max_body_bytes: int,
        max_line_bytes: int,
        handoffs: list[NeedsAiohttp],
        error_response: Callable[[ProxyError], web.Response],
        forward_headers: Callable[[CIMultiDict[str]], dict[str, str]],
        json_object: Callable[[str, bytes], dict[str, Any]],
    ) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.max_line_bytes = max_line_bytes
        self.handoffs = handoffs
        self.error_response = error_response
        self.forward_headers = forward_headers
        self.json_object = json_object


_date: dict[int, str] = {}


def _http_date() -> str:
    now = int(time.time())
    date = _date.get(now)
    if date is None:
        _date.clear()
        date = _date[now] = formatdate(now, usegmt=True)
    return date


_REASONS = {status.value: status.phrase for status in HTTPStatus}


def _head(status: int, headers: Any, request_id: str, framing: str, close: bool) -> bytes:
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    block = "".join(lines)
    # Each line has one CR and one LF of its own: any more is a newline in a name or value, which
    # aiohttp refuses (one count of each over all the lines, not four tests a header).
    if block.count("\r") != len(lines) or block.count("\n") != len(lines):
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"A newline in the answer's header {name!r}.")
    if REQUEST_ID_HEADER in headers:  # the request's own goes out below, not another
        block = "".join(
            [f"{name}: {value}\r\n" for name, value in headers.items() if name.lower() != REQUEST_ID_HEADER]
        )
    connection = "Connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n{block}{REQUEST_ID_HEADER}: {request_id}\r\n"
        f"{framing}Date: {_http_date()}\r\nServer: {SERVER_SOFTWARE}\r\n{connection}\r\n"
    ).encode()


class LeanStream:
    """The part of ``web.StreamResponse`` the relay uses, written straight to the connection (chunked).
    The head goes out with the first write (``write(b"")``: alone)."""

    hold_head = False

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        self._front: FrontEnd | None = None
        self._head_sent = False
        self.prepared = False

    async def prepare(self, front: FrontEnd) -> None:
        self._front = front
        self.prepared = True
        if not self.hold_head:
            await self.write(b"")

    async def write(self, data: bytes) -> None:
        front = self._front
        assert front is not None
        if not self._head_sent:
            self._head_sent = front.started = True
            head = _head(
                self.status, self.headers, front.request_id, "Transfer-Encoding: chunked\r\n", front.closing
            )
            front.send(head + b"%x\r\n%b\r\n" % (len(data), data) if data else head)
        elif data:
            front.send(b"%x\r\n%b\r\n" % (len(data), data))
        if front._writing_paused or front._closed:  # (the usual case, neither, without a coroutine)
            await front.drained()

    async def write_eof(self, data: bytes = b"") -> None:
        front = self._front
        assert front is not None
        if data:
            await self.write(data)
        if not self._head_sent:
            await self.write(b"")
        front.send(b"0\r\n\r\n")
        front.answered = True


class LeanEventStream(LeanStream):
    hold_head = True


_STREAMS: Streams = (LeanEventStream, LeanStream)  # type: ignore[assignment]


class _Request:
    __slots__ = ("body", "close", "headers", "route")

    def __init__(self, route: _Route, headers: CIMultiDict[str], body: bytes, close: bool) -> None:
        self.route = route
        self.headers = headers
        self.body = body
        self.close = close


class _HeadParser:
    """httptools' callbacks for one request head."""

    __slots__ = ("complete", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True


class FrontEnd(asyncio.Protocol):
    """One client connection, until it is handed to aiohttp (``_hand_over``) or closed."""

    def __init__(
        self, server: Server, rules: FrontEndRules, make_handler: Callable[[], asyncio.Protocol]
    ) -> None:
        self._server = server
        self._rules = rules
        self._make_handler = make_handler
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._need = 0  # bytes the request in the buffer needs before it can be served
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._task_handler: asyncio.Task[None] | None = None  # the request being served (aiohttp's name)
        self._closed = False  # the connection is gone
        self._stopping = False  # shutting down: no new requests
        self._paused_reading = False
        self._drain: asyncio.Future[None] | None = None
        self._writing_paused = False
        self._idle_since = 0.0
        self._keepalive = float(server._kwargs.get("keepalive_timeout", 3630))
        self._keepalive_handle: asyncio.TimerHandle | None = None
        # the request being served
        self.request_id = ""
        self.closing = False
        self.started = False  # its answer's head is out
        self.answered = False  # its answer is complete

    # -- asyncio ---------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        tcp_nodelay(self._transport, True)  # type: ignore[arg-type]  # as aiohttp's handler: a stream's small writes leave at once
        self._server.connection_made(self, transport)  # type: ignore[arg-type]
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self._need:  # a body on its way: gathered, joined once it is all here
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._need:
                return
            self._buffer = b"".join(self._pending)
            self._pending.clear()
            self._need = 0
        else:
            self._buffer += data
        if self._task_handler is None:
            self._next()
        elif len(self._buffer) > _HIGH_WATER and not self._paused_reading:
            self._paused_reading = True
            self._transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        return False  # as aiohttp: the transport closes

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self._server.connection_lost(self, exc)  # type: ignore[arg-type]
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        self._wake(ConnectionResetError("The client closed the connection."))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake(None)

    # -- aiohttp's connection manager (graceful shutdown) ------------------------------------------------

    def close(self) -> None:
        self._stopping = True
        if self._task_handler is None and self._transport is not None:
            self._transport.close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 (aiohttp's signature)
        self._stopping = True
        task = self._task_handler
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        if self._transport is not None:
            self._transport.close()

    # -- writing ---------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._closed or self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        self._transport.write(data)

    async def drained(self) -> None:
        """Wait while the client reads slower than the answer comes (backpressure)."""
        if self._closed:
            raise ConnectionResetError("Cannot write to closing transport")
        if self._writing_paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def _wake(self, exc: BaseException | None) -> None:
        waiter = self._drain
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    # -- requests --------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Serve the next request in the buffer, wait for more of it, or hand the connection over."""
        buffer = self._buffer
        if not buffer or self._closed:
            return
        end = buffer.find(_HEAD_END)
        if end < 0:
            if len(buffer) > 2 * self._rules.max_line_bytes or not buffer.isascii():
                self._hand_over()  # aiohttp answers what it makes of it (431, 400)
            return
        request = self._parse(buffer, end + 4)
        if request is None:
            self._hand_over()
        elif isinstance(request, _Request):
            self._task_handler = self._loop.create_task(self._serve(request))

    def _parse(self, buffer: bytes, body_start: int) -> _Request | bool | None:
        """The request at the start of ``buffer`` if the front end serves it, False if its body is not
        all here yet, None if aiohttp must serve it."""
        head = buffer[:body_start]
        if (
            not head.isascii()
            or head.count(b"\n") != head.count(b"\r\n")
            or head.count(b"\r") != head.count(b"\n")
        ):
            return None
        limit = self._rules.max_line_bytes
        if len(head) > limit and any(len(line) > limit for line in head.split(b"\r\n")):
            return None
        callbacks = _HeadParser()
        parser = httptools.HttpRequestParser(callbacks)
        try:
            parser.feed_data(head)
        except httptools.HttpParserError:
            return None
        route = _ROUTES.get(callbacks.url)
        if route is None and (match := _SLUG_ROUTE.fullmatch(callbacks.url)):
            slug, tail = match.group(1).decode(), match.group(2).decode()
            route = (f"/{slug}/v1/{tail}", f"/{tail}", slug, "/{slug}/v1/{tail}")
        if (
            route is None
            or not callbacks.complete
            or parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or len(callbacks.headers) > _MAX_HEADERS
        ):
            return None
        headers: CIMultiDict[str] = CIMultiDict([(k.decode(), v.decode()) for k, v in callbacks.headers])
        if any(name in headers for name in _UNUSUAL):
            return None
        lengths = headers.getall("Content-Length", ())
        if len(lengths) != 1 or not lengths[0].isdigit():
            return None
        length = int(lengths[0])
        if length > self._rules.max_body_bytes:
            return None  # aiohttp's 413
        connection = headers.getall("Connection", ("keep-alive",))
        if len(connection) != 1 or connection[0].lower() not in _CONNECTION_VALUES:
            return None
        content_types = headers.getall("Content-Type", ())
        if len(content_types) != 1 or content_types[0].lower() not in _JSON_TYPES:
            return None
        if len(buffer) < body_start + length:
            if self._task_handler is None:
                self._need = body_start + length
                self._pending.append(buffer)
                self._pending_size = len(buffer)
                self._buffer = b""
            if self._paused_reading:
                self._paused_reading = False
                self._transport.resume_reading()  # type: ignore[union-attr]
            return False
        body = buffer[body_start : body_start + length]
        path = route[0]
        if any(needs(path, headers, body) for needs in self._rules.handoffs):
            return None
        self._buffer = buffer[body_start + length :]
        return _Request(route, headers, body, connection[0].lower() == "close")

    def _hand_over(self) -> None:
        """aiohttp serves this connection from the request at the start of the buffer on."""
        transport = self._transport
        assert transport is not None
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        self._server._connections.pop(self, None)  # type: ignore[call-overload]
        handler = self._make_handler()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._paused_reading:
            self._paused_reading = False
            transport.resume_reading()
        buffer, self._buffer = self._buffer + b"".join(self._pending), b""
        self._pending.clear()
        self._need = 0
        if buffer:
            handler.data_received(buffer)

    async def _serve(self, request: _Request) -> None:
        rules = self._rules
        gateway = rules.gateway
        started = time.perf_counter()
        headers = request.headers
        self.request_id = request_id = request_id_of(headers.get(REQUEST_ID_HEADER))
        self.closing = request.close or self._stopping
        self.answered = self.started = False
        token = enter_request(request_id)
        api_path, upstream_path, slug, metrics_route = request.route
        # as the /v1/ routes and /{slug}/v1/{tail} (``entrypoints.http``) call the gateway
        kwargs: dict[str, Any] = {} if slug is None else {"slug": slug, "model_required": True}
        status = 500
        try:
            try:
                grant = gateway.authenticate(headers.get("Authorization"))
                payload = rules.json_object("application/json", request.body)
                call = gateway.prepare(grant, api_path, upstream_path, payload=payload, **kwargs)
                call.request_id = request_id
                forwarded = rules.forward_headers(headers)
                forwarded[REQUEST_ID_HEADER] = request_id
                response = await gateway.forward(
                    call, "POST", "", forwarded, partial(relay, self, streams=_STREAMS)
                )
            except ProxyError as error:
                response = rules.error_response(error)
            except Exception:
                log.exception("unexpected error on %s", api_path)
                response = rules.error_response(ProxyError("The gateway failed to handle the request."))
            status = response.status
            if self.started:
                if not self.answered:  # a stream that could not end (the client left, an error)
                    self.closing = True
            else:
                self._send_whole(response)
        except ConnectionResetError:
            self.closing = True
        finally:
            leave_request(token)
            gateway.metrics.observe_request(metrics_route, status, time.perf_counter() - started)
            self._task_handler = None
            self._done()

    def _send_whole(self, response: Any) -> None:
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            body = response.body
            headers = response.headers
            if "Content-Type" not in headers:
                headers["Content-Type"] = "application/octet-stream"
            head = _head(
                response.status, headers, self.request_id, f"Content-Length: {len(body)}\r\n", self.closing
            )
            self.send(head + body)
        else:  # not an answer of the relay or the errors (a prepared aiohttp stream): nothing sensible to send
            log.error("the lean front end cannot send %r", type(response).__name__)
            self.closing = True

    def _done(self) -> None:
        transport = self._transport
        if self._closed or transport is None:
            return
        if self.closing or self._stopping:
            transport.close()
            return
        self._idle()
        if self._paused_reading and len(self._buffer) <= _HIGH_WATER:
            self._paused_reading = False
            transport.resume_reading()
        self._next()

    def _idle(self) -> None:
        self._idle_since = self._loop.time()
        if self._keepalive_handle is None and self._keepalive > 0:
            self._keepalive_handle = self._loop.call_at(
                self._idle_since + self._keepalive, self._keepalive_due
            )

    def _keepalive_due(self) -> None:
        self._keepalive_handle = None
        if self._closed or self._transport is None:
            return
        if self._task_handler is None and not self._buffer:
            due = self._idle_since + self._keepalive
            if self._loop.time() >= due:
                self._transport.close()
            else:
                self._keepalive_handle = self._loop.call_at(due, self._keepalive_due)
