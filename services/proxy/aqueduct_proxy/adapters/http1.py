"""A lean HTTP/1.1 keep-alive client for the proxy's calls with a bytes body (or none).

aiohttp's client spends about 100 µs per call in its request and response machinery; on the hot path that is
most of what the proxy adds to a model server's latency. This client is an asyncio ``Protocol`` around
httptools' parser (llhttp) and a small connection pool, and nothing else: no cookies, no redirects, no
compression (identity only), no proxies. Its answers offer the part of ``aiohttp.ClientResponse`` that the
relay, the gateway and the batch worker use, and its errors subclass aiohttp's, so retries and cut-short
detection work unchanged:

- no connection, or it broke before a complete response head: ``aiohttp.ClientConnectionError`` subclasses;
- the body broke off or was malformed: ``aiohttp.ClientPayloadError`` subclass;
- nothing arrived for ``read_timeout`` seconds while waiting (or no connection within ``connect_timeout``):
  ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = [
    "Http1Client",
    "Http1Response",
    "UpstreamConnectError",
    "UpstreamDisconnectedError",
    "UpstreamPayloadError",
]

# A slow reader pauses the socket once this much of the body waits in memory (a fast model server and a slow
# client must not fill the proxy's memory); reading resumes as soon as the reader takes it.
HIGH_WATER = 256 * 1024
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "CONNECT", "TRACE"})
_FRAMING = frozenset({"content-length", "transfer-encoding"})  # the client frames the body itself
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SMALL_BODY = 64 * 1024  # below this, head and body go out in one write
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())  # an answer's until its head came
# Header names found to be tokens (``_TOKEN``): the same few names come with every request.
_VALID_NAMES: set[str] = set()
_VALID_NAMES_MAX = 1024


class UpstreamConnectError(aiohttp.ClientOSError):
    """No connection to the model server (refused, unreachable, name not resolved, TLS refused)."""


class UpstreamDisconnectedError(aiohttp.ClientConnectionError):
    """The connection closed, or sent something that is not HTTP, before a complete response head."""


class UpstreamPayloadError(aiohttp.ClientPayloadError):
    """The response body was cut short or malformed."""


class _Target:
    """What one URL needs for every request to it, worked out once."""

    __slots__ = ("authorization", "host", "host_line", "key", "path", "port", "tls")

    def __init__(self, url: str) -> None:
        parsed = URL(url)  # also percent-encodes what needs it, as aiohttp does
        if parsed.scheme not in ("http", "https") or not parsed.raw_host or parsed.port is None:
            raise ValueError(f"Not an http(s) URL with a host: {url!r}.")
        self.tls = parsed.scheme == "https"
        self.host: str = parsed.raw_host
        self.port: int = parsed.port
        self.key = (parsed.scheme, self.host, self.port)
        self.path = parsed.raw_path_qs
        self.host_line = f"Host: {parsed.host_port_subcomponent}\r\n"
        self.authorization = None
        if parsed.user is not None:
            credentials = f"{parsed.user}:{parsed.password or ''}".encode()
            self.authorization = f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"


class Http1Content:
    """The body as it arrives: ``readany()`` and ``iter_any()`` hand over each piece as soon as it is there."""

    __slots__ = ("_chunks", "_eof", "_exc", "_paused", "_response", "_size", "_waiter")

    def __init__(self, response: Http1Response) -> None:
        self._response: Http1Response | None = response  # None once the answer is over
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    async def readany(self) -> bytes:
        """What has arrived since the last call (waiting for something), or ``b""`` at the end."""
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self._eof:
                return b""
            response = self._response
            assert response is not None  # detached answers have ended (``_detach``)
            self._waiter = response._loop.create_future()
            try:
                await response._wait(self._waiter)
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            if self._response is not None:
                self._response._resume()
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        while data := await self.readany():
            yield data

    @property
    def buffered(self) -> int:
        """Bytes of the body received and not yet taken by the reader."""
        return self._size

    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER and not self._paused and self._response is not None:
            self._paused = True
            self._response._pause()
        self._wake()

    def _end(self, exc: BaseException | None = None) -> None:
        if self._eof or self._exc is not None:
            return
        if exc is None:
            self._eof = True
        else:
            self._exc = exc
        self._wake()

    def _detach(self) -> None:
        """The answer is over: a reader still waiting learns it, and the reference back to it goes."""
        self._end(UpstreamPayloadError("The connection was closed before the end of the answer."))
        self._response = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Http1Response:
    """One answer on one connection; also the parser's callback target while it is read.

    Callers must end it with ``release()`` (back to the pool if the body was read to the end, else the
    connection is dropped) or ``close()`` (dropped).
    """

    def __init__(self, conn: _Connection, head_only: bool, read_timeout: float) -> None:
        self._conn: _Connection | None = conn
        self._loop = conn.loop
        self._head_only = head_only
        self._read_timeout = read_timeout
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[None] = self._loop.create_future()
        self._raw_headers: list[tuple[str, str]] = []
        self._interim = False
        self._complete = False
        self._keep_alive = False
        self._close_delimited = False
        self._released = False
        self._body: bytes | None = None
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: asyncio.Future[None] | None = None
        self.got_bytes = False
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDictProxy[str] = _NO_HEADERS  # (read-only: replaced, never changed)
        self.content = Http1Content(self)

    @property
    def content_type(self) -> str:
        raw = self.headers.get("Content-Type")
        if raw is None:
            return "application/octet-stream"
        return raw.partition(";")[0].strip().lower()

    async def read(self) -> bytes:
        """The whole body (kept: a second call returns it again); the connection goes back to the pool."""
        if self._body is None:
            parts = []
            while data := await self.content.readany():
                parts.append(data)
            self._body = b"".join(parts)
            self.release()
        return self._body

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        conn, self._conn = self._conn, None
        if conn is not None and conn.response is self:
            if self._complete and self._keep_alive and self.content._exc is None and not conn.closed:
                if self.content._paused:
                    self.content._paused = False
                    self._resume_transport(conn)
                conn.response = None
                conn.pool.put_back(conn)
            else:
                conn.abort()
        self._detach()

    def close(self) -> None:
        self._released = True
        conn, self._conn = self._conn, None
        if conn is not None and conn.response is self:
            conn.abort()
        self._detach()

    def _detach(self) -> None:
        """The answer is over: the references that make cycles go (the parser calls this response's
        methods; the body reader and a read timer point back to it), so that reference counting frees
        it at once. Left to the cyclic garbage collector, every answer's 30 objects made it run every
        few dozen requests, its pause landing on one of them."""
        self._parser = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.content._detach()

    # -- the connection's side -----------------------------------------------------------------------------

    def _send(self, head: bytes, body: bytes | None) -> None:
        conn = self._conn
        assert conn is not None and conn.transport is not None
        if conn.closed:  # went away while idle, between the pool's check and now
            raise UpstreamDisconnectedError("The connection to the model server was closed.")
        conn.response = self
        if body is None:
            conn.transport.write(head)
        elif len(body) < _SMALL_BODY:
            conn.transport.write(head + body)
        else:
            conn.transport.write(head)
            conn.transport.write(body)

    async def _wait(self, waiter: asyncio.Future[None]) -> None:
        """Wait for ``waiter``; a ``TimeoutError`` if no byte arrives for ``read_timeout`` seconds.

        One timer watches all the waits of an answer (its head, then each read of its body): it is set at
        the first and, when it fires, looks at the wait under way then (re-set for the rest of the time
        when bytes came meanwhile); not a timer made and cancelled for each of them."""
        self._last_data = self._loop.time()
        self._waiting = waiter
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_data + self._read_timeout, self._check_timeout)
        try:
            await waiter
        finally:
            self._waiting = None

    def _check_timeout(self) -> None:
        self._timer = None
        waiter = self._waiting
        if waiter is None or waiter.done() or self._parser is None:
            return  # not waiting now: the next wait sets the timer again
        due = self._last_data + self._read_timeout
        if self._loop.time() < due:  # bytes arrived, or the wait began, since the timer was set
            self._timer = self._loop.call_at(due, self._check_timeout)
            return
        exc = TimeoutError(f"The model server sent nothing for {self._read_timeout:g} s.")
        self.content._end(exc)
        if not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _data(self, data: bytes) -> None:
        self.got_bytes = True
        self._last_data = self._loop.time()
        parser = self._parser
        if parser is None:  # the answer is over: nothing more is read for it
            return
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._broken(f"The model server sent an invalid HTTP answer ({exc}).")

    def _lost(self, exc: BaseException | None) -> None:
        """The connection closed while this response was current."""
        if not self._head.done():
            self._head.set_exception(
                UpstreamDisconnectedError("The model server closed the connection before answering.")
            )
            return
        if self._complete:
            return
        if self._close_delimited and exc is None:  # the end of such a body is the end of the connection
            self._complete = True
            self.content._end()
        else:
            self.content._end(UpstreamPayloadError("The model server broke off its answer."))

    def _dropped(self) -> None:
        """The connection was closed from this side (client closed, reader gone): waiters must not hang."""
        if not self._head.done():
            self._head.set_exception(UpstreamDisconnectedError("The connection was closed."))
        elif not self._complete:
            self.content._end(UpstreamPayloadError("The connection was closed before the end of the answer."))

    def _broken(self, message: str) -> None:
        if not self._head.done():
            self._head.set_exception(UpstreamDisconnectedError(message))
        else:
            self.content._end(UpstreamPayloadError(message))
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    def _pause(self) -> None:
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.pause_reading()

    def _resume(self) -> None:
        conn = self._conn
        if conn is not None:
            self._resume_transport(conn)

    @staticmethod
    def _resume_transport(conn: _Connection) -> None:
        if conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # bytes after the answer: the connection cannot carry another request
            self._keep_alive = False

    def on_status(self, status: bytes) -> None:
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # called by it
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints): skipped
            self._interim = True
            self._raw_headers = []
            self.reason = ""
            return
        if self._complete:
            return
        self.status = status
        headers: CIMultiDict[str] = CIMultiDict(self._raw_headers)
        self.headers = CIMultiDictProxy(headers)
        self._keep_alive = parser.should_keep_alive()
        if self._head_only:
            self._finish()
        else:
            self._close_delimited = (
                status not in (204, 304)
                and "Content-Length" not in headers
                and "chunked" not in headers.get("Transfer-Encoding", "").lower()
            )
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if not self._complete:
            self.content._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif not self._complete:
            self._finish()

    def _finish(self) -> None:
        self._complete = True
        self.content._end()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Http1Client, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.response: Http1Response | None = None
        self.closed = False
        self.idle = False
        self.idle_since = 0.0
        self.reused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        if self.closed:  # the client was closed while this connection was being opened
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for on an idle connection: it cannot be trusted
            self.abort()
            return
        response._data(data)

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        response, self.response = self.response, None
        if response is not None:
            response._lost(exc)

    def close(self) -> None:
        """Closed gracefully (an idle connection)."""
        self.response = None
        if self.transport is not None:
            self.transport.close()
        self._gone()

    def abort(self) -> None:
        """Dropped at once (mid-answer): nothing more is read from it."""
        response, self.response = self.response, None
        if self.transport is not None:
            self.transport.abort()
        self._gone()
        if response is not None:
            response._dropped()

    def _gone(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)


class Http1Client:
    """Keep-alive connections per (scheme, host, port), at most ``pool_size`` open in all.

    Idle connections close after ``keepalive_timeout`` seconds. A request sent on a reused connection that
    the server had closed meanwhile (nothing of the answer arrived) is sent once more on a new connection:
    the server never saw it.
    """

    def __init__(
        self,
        *,
        pool_size: int = 1000,
        read_timeout: float = 600.0,
        connect_timeout: float = 10.0,
        keepalive_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1.")
        self._limit = pool_size
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_timeout
        self._ssl = ssl_context
        self._targets: dict[str, _Target] = {}
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._all)

    async def request(
        self, method: str, url: str, *, headers: dict[str, str], data: bytes | None = None
    ) -> Http1Response:
        target = self._target(url)
        head = _head(method, target, headers, data)
        for attempt in (0, 1):
            conn = await self._acquire(target, fresh=attempt == 1)
            response = Http1Response(conn, method == "HEAD", self._read_timeout)
            try:
                response._send(head, data)
                await response._wait(response._head)
                return response
            except UpstreamDisconnectedError:
                response.close()
                if attempt or not conn.reused or response.got_bytes:
                    raise
            except BaseException:  # a timeout, or the caller gave up (cancelled): never reuse it
                response.close()
                raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._all):
            conn.abort()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(UpstreamConnectError(0, "The HTTP client was closed."))

    def _target(self, url: str) -> _Target:
        # Parsing a URL costs more than the rest of building the request; there are few distinct ones.
        target = self._targets.get(url)
        if target is None:
            target = _Target(url)
            if len(self._targets) < 10_000:
                self._targets[url] = target
        return target

    # -- the pool ------------------------------------------------------------------------------------------

    async def _acquire(self, target: _Target, *, fresh: bool) -> _Connection:
        if self._closed:
            raise UpstreamConnectError(0, "The HTTP client was closed.")
        while True:
            if not fresh:
                idle = self._idle.get(target.key)
                if idle:
                    conn = idle.pop()  # the most recently used: the least likely to have timed out
                    conn.idle = False
                    conn.reused = True
                    return conn
            if len(self._all) < self._limit:
                return await self._connect(target)
            if not self._evict_oldest():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._wake()  # pass the turn on
                    else:
                        waiter.cancel()
                    raise

    async def _connect(self, target: _Target) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self, target.key)
        self._all.add(conn)  # counts against the limit while it connects
        tls: ssl.SSLContext | None = None
        if target.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
        except TimeoutError:  # an OSError too, but the caller tells a timeout apart
            conn.abort()
            raise
        except OSError as exc:
            conn.abort()
            raise UpstreamConnectError(
                exc.errno or 0, f"Cannot connect to {target.host}:{target.port}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            conn.abort()
            raise
        return conn

    def put_back(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle = True
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(conn.key, deque()).append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_at(conn.idle_since + self._keepalive, self._sweep)
        self._wake()

    def forget(self, conn: _Connection) -> None:
        """``conn`` is closed: it no longer counts, and someone waiting for a connection may open one."""
        if conn not in self._all:
            return
        self._all.discard(conn)
        if conn.idle:
            conn.idle = False
            idle = self._idle.get(conn.key)
            if idle is not None:
                try:
                    idle.remove(conn)
                except ValueError:
                    pass
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _evict_oldest(self) -> bool:
        """Close the longest-idle connection (to any server) to make room; ``False`` if none is idle."""
        oldest: _Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        oldest.close()
        return True

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        expired = loop.time() - self._keepalive
        next_due: float | None = None
        for key in list(self._idle):
            idle = self._idle[key]
            while idle and idle[0].idle_since <= expired:
                idle[0].close()  # forget() takes it out of the deque
            if idle:
                due = idle[0].idle_since + self._keepalive
                next_due = due if next_due is None else min(next_due, due)
            else:
                del self._idle[key]
        if next_due is not None:
            self._sweeper = loop.call_at(next_due, self._sweep)


def _head(method: str, target: _Target, headers: dict[str, str], body: bytes | None) -> bytes:
    """The request line and headers, refusing names and values that would inject headers of their own."""
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"Invalid HTTP method {method!r}.")
    lines = [f"{method} {target.path} HTTP/1.1\r\n"]
    has_host = has_auth = False
    valid = _VALID_NAMES
    for name, value in headers.items():
        if name not in valid:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"Invalid HTTP header name {name!r}.")
            if len(valid) >= _VALID_NAMES_MAX:
                valid.clear()
            valid.add(name)
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"The value of the HTTP header {name!r} contains a line break or NUL.")
        lower = name.lower()
        if lower in _FRAMING:
            continue
        if lower == "host":
            has_host = True
        elif lower == "authorization":
            has_auth = True
        lines.append(f"{name}: {value}\r\n")
    if not has_host:
        lines.append(target.host_line)
    if target.authorization is not None and not has_auth:
        lines.append(target.authorization)
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif method not in _NO_BODY_METHODS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")
