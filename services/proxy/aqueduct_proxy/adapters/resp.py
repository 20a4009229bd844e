"""A small pipelined Valkey/Redis client for the limiter's hot path.

redis-py's asyncio client checks a connection out of a pool and parses replies in Python for every
command, which cost more CPU per request than the rest of the proxy together. Here one connection per
process carries every command, replies are matched to callers in order (RESP is strictly FIFO), and only
the reply types our scripts return (integers, arrays, simple strings, errors) are parsed. Commands sent
during one turn of the event loop leave in one write: on a loopback socket each write costs more CPU
(here 30-70 µs, in the kernel and in Valkey's reading) than building the command.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import ssl
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["Encoded", "RespClient", "RespError", "bulk"]


class RespError(Exception):
    """An error reply from the server (for example NOSCRIPT)."""


def bulk(arg: bytes | str | int) -> bytes:
    """One argument as RESP sends it (a bulk string)."""
    data = arg if isinstance(arg, bytes) else str(arg).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


class Encoded:
    """``count`` arguments already encoded (``bulk`` each, joined), passed among a command's arguments
    as they are: what a caller sends again and again is encoded once."""

    __slots__ = ("count", "data")

    def __init__(self, count: int, data: bytes) -> None:
        self.count, self.data = count, data


# Integers as bulk strings: limits, windows and costs come back again and again.
_INTEGERS: dict[int, bytes] = {}
_INTEGERS_MAX = 4096


def _bulk(args: Any) -> bytes:
    return _bulk_counted(args)[0]


def _bulk_counted(args: Any) -> tuple[bytes, int]:
    """The arguments encoded, and how many they are (an ``Encoded`` counts its own)."""
    parts, count = [], 0
    for arg in args:
        if type(arg) is int:
            data = _INTEGERS.get(arg)
            if data is None:
                data = bulk(arg)
                if len(_INTEGERS) >= _INTEGERS_MAX:
                    _INTEGERS.clear()
                _INTEGERS[arg] = data
            parts.append(data)
            count += 1
        elif isinstance(arg, Encoded):
            parts.append(arg.data)
            count += arg.count
        else:
            parts.append(bulk(arg))
            count += 1
    return b"".join(parts), count


def _encode(args: tuple[Any, ...]) -> bytes:
    return b"*%d\r\n" % len(args) + _bulk(args)


class _Parser:
    """Incremental RESP2 parser; yields complete replies."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        if not self._buffer and (replies := _integer_replies(data)) is not None:
            return replies
        self._buffer += data
        replies = []
        while True:
            parsed = self._parse(0)
            if parsed is None:
                break
            value, end = parsed
            del self._buffer[:end]
            replies.append(value)
        return replies

    def _parse(self, pos: int) -> tuple[Any, int] | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            return None
        kind, line = buffer[pos : pos + 1], bytes(buffer[pos + 1 : end])
        if kind == b":":
            return int(line), end + 2
        if kind == b"+":
            return line.decode(), end + 2
        if kind == b"-":
            return RespError(line.decode()), end + 2
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, end + 2
            if len(buffer) < end + 2 + size + 2:
                return None
            return bytes(buffer[end + 2 : end + 2 + size]), end + 2 + size + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, end + 2
            items, cursor = [], end + 2
            for _ in range(count):
                if buffer[cursor : cursor + 1] == b":":  # an integer, read here: most items are
                    end = buffer.find(b"\r\n", cursor)
                    if end < 0:
                        return None
                    items.append(int(buffer[cursor + 1 : end]))
                    cursor = end + 2
                    continue
                parsed = self._parse(cursor)
                if parsed is None:
                    return None
                item, cursor = parsed
                items.append(item)
            return items, cursor
        raise RespError(f"unexpected reply type {kind!r}")


def _integer_replies(data: bytes) -> list[Any] | None:
    """``data`` read as whole replies that are integers or arrays of integers (what the scripts of the
    request path answer), in one split; None for anything else (the parser then reads it)."""
    lines = data.split(b"\r\n")
    end = len(lines) - 1
    if lines[end]:  # not ending with a whole line
        return None
    replies: list[Any] = []
    at = 0
    try:
        while at < end:
            line = lines[at]
            kind = line[:1]
            if kind == b":":
                replies.append(int(line[1:]))
                at += 1
            elif kind == b"*":
                count = int(line[1:])
                if count < 0 or at + count >= end:
                    return None
                items = lines[at + 1 : at + 1 + count]
                for item in items:
                    if item[:1] != b":":
                        return None
                replies.append([int(item[1:]) for item in items])
                at += 1 + count
            else:
                return None
    except ValueError:
        return None
    return replies


class _Handoff:
    """A waiter that hands the reply straight to a function: a future's callbacks would wait for the
    next turn of the loop."""

    __slots__ = ("_done", "_on_reply")

    def __init__(self, on_reply: Callable[[Any], None]) -> None:
        self._on_reply = on_reply
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, reply: Any) -> None:
        if self._done:
            return
        self._done = True
        self._on_reply(reply)

    set_exception = set_result


_Waiter = asyncio.Future[Any] | _Handoff


class _Protocol(asyncio.Protocol):
    def __init__(self, before_flush: list[Callable[[], None]]) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[_Waiter] = deque()
        # When each waiter's reply is due (``loop.time()``), in step with ``waiters``. One timer watches
        # them all (``_watch``), not a timer made and cancelled for every command: a uvloop timer costs
        # about 3 µs, on the way of every request.
        self.deadlines: deque[float] = deque()
        self._watch: asyncio.TimerHandle | None = None
        self.parser = _Parser()
        self.lost = False
        self._unsent: list[bytes] = []
        self._flushing = False
        self._before_flush = before_flush

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes, waiter: _Waiter, timeout: float | None = None) -> None:
        """Queue a command; whatever this turn of the loop queues leaves in one write, in order. Without
        a reply within ``timeout`` seconds, the waiter gets a TimeoutError and the connection closes."""
        self._wait_for(waiter, timeout)
        self._unsent.append(command)
        self.flush_soon()

    def send_awaited(self, command: bytes, waiter: _Waiter, timeout: float | None = None) -> None:
        """``send`` for a caller that waits for the reply. On an idle connection (nothing in flight: a
        process under little load, one request at a time), the command (with what the hooks add) leaves
        now rather than a turn of the loop later, on the way of the request that waits for it; under load
        replies are in flight and the turn's commands still leave together."""
        self._wait_for(waiter, timeout)
        self._unsent.append(command)
        if len(self.waiters) == len(self._unsent):
            self._flush()
        else:
            self.flush_soon()

    def _wait_for(self, waiter: _Waiter, timeout: float | None) -> None:
        self.waiters.append(waiter)
        if timeout is None:
            self.deadlines.append(math.inf)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + timeout
        self.deadlines.append(due)
        watch = self._watch
        if watch is None or due < watch.when():
            if watch is not None:
                watch.cancel()
            self._watch = loop.call_at(due, self._check)

    def _check(self) -> None:
        """The watch's timer: the first waiter still waiting (one whose caller gave up does not count)
        past its deadline expires (``_expire``); else the timer is set for its deadline."""
        self._watch = None
        loop = asyncio.get_running_loop()
        for waiter, due in zip(self.waiters, self.deadlines, strict=True):
            if waiter.done():
                continue
            if due <= loop.time():
                _expire(waiter, self)
            elif due != math.inf:
                self._watch = loop.call_at(due, self._check)
            return

    def flush_soon(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        try:
            for hook in self._before_flush:  # they may add commands: those leave in this write too
                hook()
        finally:
            self._flushing = False
            unsent, self._unsent = self._unsent, []
            if unsent and self.transport is not None and not self.lost:
                self.transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        for reply in self.parser.feed(data):
            waiter = self.waiters.popleft()
            self.deadlines.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.deadlines.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"connection to Valkey lost: {exc}"))


class RespClient:
    """One pipelined connection, reconnected on demand; ``evalsha`` with transparent script loading."""

    def __init__(self, url: str, timeout: float = 0.25) -> None:
        parsed = urlparse(url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 6379
        self._db = int((parsed.path or "/0").lstrip("/") or 0)
        self._username = unquote(parsed.username) if parsed.username else None
        self._password = unquote(parsed.password) if parsed.password else None
        self._ssl = ssl.create_default_context() if parsed.scheme == "rediss" else None
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._before_flush: list[Callable[[], None]] = []
        self._connecting: asyncio.Lock | None = None
        self._scripts: dict[str, bytes] = {}
        # "EVALSHA <sha> <n> <keys...>", encoded once per key set: a token's counters keep their keys.
        self._heads: dict[tuple[str, tuple[str, ...]], bytes] = {}

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            return protocol
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.lost:
                return self._protocol
            loop = asyncio.get_running_loop()
            _, fresh = await asyncio.wait_for(
                loop.create_connection(
                    partial(_Protocol, self._before_flush), self._host, self._port, ssl=self._ssl
                ),
                self._timeout,
            )
            self._protocol = fresh
            if self._password is not None:
                auth = (
                    ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                )
                await self._call(fresh, auth)
            if self._db:
                await self._call(fresh, ("SELECT", self._db))
            return fresh

    async def _call(self, protocol: _Protocol, args: tuple[Any, ...]) -> Any:
        return await self._send(protocol, _encode(args))

    async def _send(self, protocol: _Protocol, command: bytes) -> Any:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.send_awaited(command, waiter, self._timeout)
        reply = await waiter
        if isinstance(reply, RespError):
            raise reply
        return reply

    async def execute(self, *args: Any) -> Any:
        return await self._call(await self._connection(), args)

    def before_flush(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` before each write: what it sends joins the commands of that turn."""
        self._before_flush.append(hook)

    def flush_soon(self) -> bool:
        """Make sure a write (and its hooks) runs at the end of this turn; False when not connected."""
        protocol = self._protocol
        if protocol is None or protocol.lost:
            return False
        protocol.flush_soon()
        return True

    def register_script(self, source: str) -> str:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source.encode()
        return sha

    def _evalsha_command(self, sha: str, keys: list[str], args: list[Any]) -> bytes:
        head_key = (sha, tuple(keys))
        head = self._heads.get(head_key)
        if head is None:
            head = _bulk(("EVALSHA", sha, len(keys), *keys))
            if len(self._heads) < 10_000:
                self._heads[head_key] = head
        encoded, count = _bulk_counted(args)
        return b"*%d\r\n%b%b" % (3 + len(keys) + count, head, encoded)

    def evalsha_then(
        self, sha: str, keys: list[str], args: list[Any], on_reply: Callable[[Any], None]
    ) -> bool:
        """Send without waiting (False when not connected): ``on_reply`` gets the reply, an error reply
        or the exception (timeout, connection lost) as soon as it is read, before any task resumes,
        so that whoever waits for the result of that reply finds it ready. Commands keep their order
        on the one connection, so whatever this process sends next runs after it."""
        protocol = self._protocol
        if protocol is None or protocol.lost or protocol.transport is None:
            return False
        protocol.send(self._evalsha_command(sha, keys, args), _Handoff(on_reply), self._timeout)
        return True

    async def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        command = self._evalsha_command(sha, keys, args)
        try:
            return await self._send(await self._connection(), command)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.execute("SCRIPT", "LOAD", self._scripts[sha])
            return await self._send(await self._connection(), command)

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()


def _expire(waiter: _Waiter, protocol: _Protocol) -> None:
    if not waiter.done():
        # The connection is out of step now (a late reply would go to the next caller): drop it.
        waiter.set_exception(TimeoutError("Valkey did not answer in time"))
        if protocol.transport is not None:
            protocol.transport.close()
