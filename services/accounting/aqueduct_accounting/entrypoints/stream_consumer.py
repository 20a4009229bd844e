"""Stream handlers: durable JetStream pull consumers that store messages into ClickHouse in batches.

A batch is flushed when ``batch_size`` messages or ``batch_bytes`` of payload are buffered, when the stream is drained and the batch has
lingered briefly, or after ``flush_interval`` at the latest; but, unless it is full, not sooner than
``store_interval`` after the previous store began. So a steady stream is stored once per ``store_interval``
(one insert, whatever the rate: its cost is shared by every event of the interval), while the first
events after a quiet spell are stored at once. Messages are acknowledged only after their batch is
stored. With a dead-letter policy, what cannot be read or stored goes to the dead-letter stream
(``dead_letter_path``) and ingest goes on; without one, a poison message is terminated and a failed store
retried with the same messages forever. Used for usage events and for the directory's integration events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from pydantic import ValidationError

from aqueduct_accounting.adapters.jetstream_pull import PullBatches
from aqueduct_accounting.entrypoints.dead_letter_path import DeadLetterPolicy, GuardedStore, Letter
from aqueduct_libs.bus import patiently

__all__ = ["BatchConsumer", "ensure_durable_consumer"]

T = TypeVar("T")

log = logging.getLogger(__name__)


async def ensure_durable_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subject: str,
    max_ack_pending: int,
    ack_wait: float,
) -> None:
    """Create the durable pull consumer, or update it in place (ack_wait and max_ack_pending are editable)."""
    config = js_api.ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        max_deliver=-1,
    )
    # Patiently: on a NATS cluster electing the stream's leader the request is never answered.
    await patiently(lambda: js.add_consumer(stream, config), f"the stream {stream}")


class BatchConsumer(Generic[T]):
    """``decode`` turns a message into an item (raising ``ValueError`` for poison messages, which are
    terminated, never redelivered); ``store`` persists a batch idempotently; ``on_stored`` follows."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        *,
        stream: str,
        subject: str,
        durable: str,
        decode: Callable[[bytes], T],
        store: Callable[[list[T]], Awaitable[object]],
        batch_size: int,
        flush_interval: float,
        batch_bytes: int = 1 << 62,
        max_ack_pending: int,
        ack_wait: float,
        linger: float = 0.05,
        store_interval: float = 0.0,
        on_stored: Callable[[int, float], None] | None = None,
        on_rejected: Callable[[int], None] | None = None,
        on_store_failed: Callable[[], None] | None = None,
        on_lag: Callable[[int], None] | None = None,
        dead_letters: DeadLetterPolicy[T] | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._subject = subject
        self._decode = decode
        self._store = store
        self._durable = durable
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._flush_interval = flush_interval
        self._max_ack_pending = max_ack_pending
        self._ack_wait = ack_wait
        self._linger = min(linger, flush_interval)
        self._store_interval = store_interval
        self._on_stored = on_stored
        self._on_rejected = on_rejected
        self._on_store_failed = on_store_failed
        self._on_lag = on_lag
        self._stopping = asyncio.Event()
        self.guard: GuardedStore[T] | None = None
        if dead_letters is not None:
            self.guard = GuardedStore(
                store,
                dead_letters,
                stream=stream,
                consumer=durable,
                on_store_failed=on_store_failed,
                stopping=self._stopping,
            )
        # Since when (monotonic) stores fail, without a dead-letter policy (None: they do not).
        self._failing_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.running = asyncio.Event()

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def durable(self) -> str:
        return self._durable

    @property
    def failing_since(self) -> float | None:
        """Since when (monotonic) every store has failed; None while stores succeed."""
        return self.guard.failing_since if self.guard is not None else self._failing_since

    def decode(self, payload: bytes) -> T:
        return self._decode(payload)

    async def pending(self) -> int:
        """Messages of the stream not yet stored: not delivered, or delivered and not acknowledged."""
        info = await self._js.consumer_info(self._stream, self._durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def start(self) -> None:
        await ensure_durable_consumer(
            self._js, self._stream, self._durable, self._subject, self._max_ack_pending, self._ack_wait
        )
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self._durable}")

    async def stop(self) -> None:
        """Finish the batch in hand (insert and ack), then stop."""
        self._stopping.set()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            puller = PullBatches(
                self._nc,
                self._stream,
                self._durable,
                self._batch_size,
                max(self._flush_interval, 1.0),
                self._batch_bytes,
            )
            try:
                await puller.start()
            except Exception as exc:  # bus down: keep trying
                log.warning("cannot subscribe for consumer %s (%s); retrying", self._durable, exc)
                await asyncio.sleep(1.0)
                continue
            self.running.set()
            try:
                await self._consume(puller)
            except Exception:
                # Whatever broke (the bus going away, ...), what was not acked comes back.
                log.exception("consumer %s broke; subscribing again", self._durable)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await puller.stop()

    async def _consume(self, puller: PullBatches) -> None:
        # One batch is stored (ClickHouse works in its own threads, without the GIL) while the next one is
        # pulled and decoded here; stores stay one at a time, in order, so the id check always sees
        # earlier batches.
        storing: asyncio.Task[None] | None = None
        batch: list[Msg] = []
        stored_at = -self._store_interval
        try:
            while not self._stopping.is_set():
                batch = await puller.next_batch(
                    self._batch_size, self._linger, self._flush_interval, stored_at + self._store_interval
                )
                if not batch:
                    continue
                stored_at = time.monotonic()
                if self._on_lag is not None:
                    with contextlib.suppress(Exception):
                        self._on_lag(batch[-1].metadata.num_pending)
                decoded = self._decode_all(batch)
                if storing is not None:
                    await storing
                storing = asyncio.create_task(self._flush(batch, decoded))
                batch = []
        finally:
            # Whatever ends the loop (stop, a broken bus), store what is in hand first, so it does not
            # wait for redelivery.
            if storing is not None:
                await storing
            batch += puller.take_all()
            if batch:
                await self._flush(batch, self._decode_all(batch))

    def _decode_all(self, msgs: list[Msg]) -> tuple[list[T], set[int], list[Letter]]:
        """The batch's items, the messages (by id()) that cannot be read, and the dead letters due."""
        items: list[T] = []
        poisoned: set[int] = set()
        letters: list[Letter] = []
        for msg in msgs:
            try:
                item = self._decode(msg.data)
            except (ValidationError, ValueError) as exc:
                log.error("%s: a message cannot be read: %s", self._durable, exc)
                poisoned.add(id(msg))
                if self.guard is not None:
                    letters += self.guard.letters_of_decoding(msg, None, str(exc))
                continue
            items.append(item)
            if self.guard is not None:
                letters += self.guard.letters_of_decoding(msg, item, None)
        return items, poisoned, letters

    async def _flush(self, msgs: list[Msg], decoded: tuple[list[T], set[int], list[Letter]]) -> None:
        items, poisoned, letters = decoded
        if poisoned and self._on_rejected is not None:
            self._on_rejected(len(poisoned))
        started = time.perf_counter()
        if self.guard is not None:
            readable = [msg for msg in msgs if id(msg) not in poisoned]
            letters = letters + await self.guard.store(list(zip(readable, items, strict=True)))
            elapsed = time.perf_counter() - started
            # Each letter is in its stream before the message it came from is acknowledged.
            await self.guard.send(letters)
            for msg in msgs:
                await msg.ack()
        else:
            elapsed = await self._store_until_stored(items)
            for msg in msgs:
                if id(msg) in poisoned:
                    await msg.term()  # never redelivered: it can never become valid
                else:
                    await msg.ack()
        if self._on_stored is not None:
            self._on_stored(len(items), elapsed)

    async def _store_until_stored(self, items: list[T]) -> float:
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                await self._store(items)
                self._failing_since = None
                return time.perf_counter() - started
            except Exception:
                # Not acked, so nothing is lost; retry the same items (stores are idempotent).
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                if self._on_store_failed is not None:
                    self._on_store_failed()
                log.exception(
                    "%s: storing %d items failed; retrying in %.1fs", self._durable, len(items), delay
                )
                if self._stopping.is_set():
                    raise  # stopping: left unacknowledged, they come back
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
