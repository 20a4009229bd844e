"""Pull batches from a durable JetStream consumer through a plain NATS subscription.

``PullSubscription.fetch`` in nats-py spends a task and a timer on every message; this sends the same pull
requests (``$JS.API.CONSUMER.MSG.NEXT``) and collects the answers in a callback, which is about twice as
fast. One request for ``batch`` messages is open at a time; it ends when that many were delivered, or with
a status (408 expired, 404 nothing left, 409 ...), or, if the bus lost it, after its expiry passes.
"""

from __future__ import annotations

import asyncio
import json
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["PullBatches"]

_STATUS = "Status"
_HEARTBEAT = "100"
_UNBOUNDED = 1 << 62
_LARGEST_MESSAGE = 64 * 1024 * 1024


class PullBatches:
    def __init__(
        self, nc: NATS, stream: str, durable: str, batch: int, expires: float, max_bytes: int = _UNBOUNDED
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = batch
        self._max_bytes = max_bytes
        self._expires = max(expires, 0.5)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._buffer: list[Msg] = []
        self._buffered_bytes = 0
        self._first_at = 0.0
        self._last_at = 0.0
        self._remaining = 0  # messages the open request may still deliver; 0: no request open
        self._request_deadline = 0.0
        self._woken = asyncio.Event()

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=4 * self._batch + 1000, pending_bytes_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def take_all(self) -> list[Msg]:
        """What arrived and was not handed out yet (at shutdown: store it rather than wait for redelivery)."""
        taken, self._buffer = self._buffer, []
        self._buffered_bytes = 0
        return taken

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and _STATUS in headers and not msg.data:
            if headers[_STATUS] != _HEARTBEAT:
                self._remaining = 0  # the request is over (expired, nothing left, or refused)
                self._woken.set()
            return
        now = time.monotonic()
        if not self._buffer:
            self._first_at = now
            self._woken.set()
        self._last_at = now
        self._buffer.append(msg)
        self._buffered_bytes += len(msg.data)
        self._remaining -= 1
        if (
            self._remaining <= 0
            or len(self._buffer) >= self._batch
            or self._buffered_bytes >= self._max_bytes
        ):
            self._woken.set()

    async def _request(self) -> None:
        body = {"batch": self._batch, "expires": int(self._expires * 1e9)}
        if self._max_bytes < _UNBOUNDED:
            # Bounds what one request can pile up here when messages carry many events. Never below what
            # one message may weigh (the server's max_payload), or a large message would never come.
            body["max_bytes"] = max(self._max_bytes, self._nc.max_payload or _LARGEST_MESSAGE)
        self._remaining = self._batch
        self._request_deadline = time.monotonic() + self._expires + 1.0
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)

    async def next_batch(
        self, size: int, linger: float, max_wait: float, hold_until: float = 0.0
    ) -> list[Msg]:
        """Up to ``size`` messages (and about ``max_bytes`` of payload): as soon as that much is in, or
        ``linger`` after the first one once arrivals pause but not before ``hold_until`` (a
        ``time.monotonic()``), or after ``max_wait`` (possibly none)."""
        deadline = max(time.monotonic() + max_wait, hold_until)
        while True:
            now = time.monotonic()
            if self._remaining <= 0 or now > self._request_deadline:
                await self._request()
            if len(self._buffer) >= size or self._buffered_bytes >= self._max_bytes:
                break
            if (
                self._buffer
                and now >= hold_until
                and now - self._first_at >= linger
                and now - self._last_at >= 0.005
            ):
                break
            if now >= deadline:
                break
            wait = deadline - now
            if self._buffer:
                wait = min(wait, max(linger - (now - self._first_at), hold_until - now, 0.005))
            self._woken.clear()
            try:
                await asyncio.wait_for(self._woken.wait(), wait)
            except TimeoutError:
                pass
        count, taken_bytes = 0, 0
        for msg in self._buffer[:size]:
            count += 1
            taken_bytes += len(msg.data)
            if taken_bytes >= self._max_bytes:
                break
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        self._buffered_bytes -= taken_bytes
        if self._buffer:
            self._first_at = time.monotonic()
        return taken
