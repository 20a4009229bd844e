"""Stream handlers: durable JetStream pull consumers, declared on a FastStream ``NatsBroker``, that store
messages into ClickHouse in batches.

Each consumer is one FastStream subscriber (``PullSub(batch=True)``, manual acknowledgement) whose handler
receives the messages of one pull, decoded (``Delivered``). A store is due when ``batch_size`` messages or
``batch_bytes`` of payload are held, or ``store_interval`` after the previous store began (``busy_store_interval``
after a store of ``busy_store_bytes`` or more: a steady stream); a pull keeps one request open until then
(``_pull_until_due``), or until ``pull_size`` messages arrived, or ``handover_interval`` after the last
pull was handed over (what is read reaches ``on_delivered`` that soon, before it is stored). So a steady
stream is pulled and handled once per ``handover_interval`` and stored once per ``busy_store_interval``
(one insert whatever the rate: its cost is shared by every event of the interval), while the first
events after a quiet spell are stored ``linger`` after they arrive. A backlog (a batch filled) is stored
as fast as it is read: batch after full batch, then its last part as soon as the stream is drained (the
last message pulled has nothing pending after it), not an interval later.
Messages are acknowledged only after their batch is stored. With a dead-letter policy, what cannot be read
or stored goes to the dead-letter stream (``dead_letter_path``) and ingest goes on; without one, a poison
message is terminated and a failed store retried with the same messages forever. Used for usage events and
for the directory's integration events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from aqueduct_accounting.entrypoints.dead_letter_path import DeadLetterPolicy, GuardedStore, Letter
from aqueduct_libs.broker import OWN_INBOX
from aqueduct_libs.bus import patiently

__all__ = ["BatchConsumer", "Delivered", "StreamBroker", "broker_on", "ensure_durable_consumer"]

T = TypeVar("T")

log = logging.getLogger(__name__)

_UNBOUNDED = 1 << 62
_LARGEST_MESSAGE = 64 * 1024 * 1024


class StreamBroker(NatsBroker):
    """A FastStream NATS broker whose connection ``connect`` opens (``aqueduct_libs.bus.connect``: the
    NATS user's credentials and inbox prefix, reconnecting forever), so FastStream's subscribers, the KV
    watchers and the dead-letter publisher share one connection."""

    def __init__(self, connect: Callable[[], Awaitable[NATS]], **options: Any) -> None:
        options.setdefault("logger", log)
        options.setdefault("log_level", logging.DEBUG)  # one line per pulled batch otherwise
        options.setdefault("apply_types", False)  # handlers get the decoded batch as it is
        super().__init__(**options)
        self._open = connect

    async def _connect(self) -> NATS:
        connection = await self._open()
        self.config.connect(connection)
        return connection


def broker_on(nc: NATS) -> StreamBroker:
    """A broker on a connection already open (tests, benchmarks)."""

    async def opened() -> NATS:
        return nc

    return StreamBroker(opened)


async def ensure_durable_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subject: str,
    max_ack_pending: int,
    ack_wait: float,
) -> None:
    """Create the durable pull consumer, or update it in place (ack_wait and max_ack_pending are editable)."""
    # Patiently: on a NATS cluster electing the stream's leader the request is never answered.
    await patiently(
        lambda: js.add_consumer(stream, _consumer_config(durable, filter_subject, max_ack_pending, ack_wait)),
        f"the stream {stream}",
    )


def _consumer_config(
    durable: str, filter_subject: str, max_ack_pending: int, ack_wait: float
) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        durable_name=durable,
        filter_subject=filter_subject,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_ack_pending=max_ack_pending,
        max_deliver=-1,
    )


@dataclass
class Delivered(Generic[T]):
    """The messages of one pull or more, decoded: the items read, the messages (by id()) that cannot be
    read, and the dead letters due for what was refused at decoding."""

    msgs: list[Msg] = field(default_factory=list)
    items: list[T] = field(default_factory=list)
    poisoned: set[int] = field(default_factory=set)
    letters: list[Letter] = field(default_factory=list)
    size: int = 0  # bytes of payload

    def extend(self, other: Delivered[T]) -> None:
        self.msgs += other.msgs
        self.items += other.items
        self.poisoned |= other.poisoned
        self.letters += other.letters
        self.size += other.size


class BatchConsumer(Generic[T]):
    """``decode`` turns a message into an item (raising ``ValueError`` for poison messages, which are
    terminated, never redelivered); ``store`` persists a batch idempotently; ``on_stored`` follows."""

    def __init__(
        self,
        broker: NatsBroker,
        *,
        stream: str,
        subject: str,
        durable: str,
        decode: Callable[[bytes], T],
        store: Callable[[list[T]], Awaitable[object]],
        batch_size: int,
        flush_interval: float,
        batch_bytes: int = _UNBOUNDED,
        max_ack_pending: int,
        ack_wait: float,
        linger: float = 0.05,
        pull_size: int = 1000,
        store_interval: float = 0.0,
        busy_store_interval: float | None = None,
        busy_store_bytes: int = _UNBOUNDED,
        on_stored: Callable[[int, float], None] | None = None,
        on_rejected: Callable[[int], None] | None = None,
        on_store_failed: Callable[[], None] | None = None,
        on_lag: Callable[[int], None] | None = None,
        handover_interval: float | None = None,
        on_delivered: Callable[[list[T]], None] | None = None,
        on_flushed: Callable[[list[T]], None] | None = None,
        dead_letters: DeadLetterPolicy[T] | None = None,
        payload: Any = bytes,
        description: str | None = None,
    ) -> None:
        self._broker = broker
        self._stream = stream
        self._subject = subject
        self._decode = decode
        self._store = store
        self._durable = durable
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes
        self._max_ack_pending = max_ack_pending
        self._ack_wait = ack_wait
        self._store_interval = store_interval
        # A store that held busy_store_bytes of payload or more makes the next one due after
        # busy_store_interval instead (a busy stream's inserts take longer; its per-store cost is shared
        # by more events already): see _flush_held.
        self._busy_store_interval = store_interval if busy_store_interval is None else busy_store_interval
        self._busy_store_bytes = busy_store_bytes
        self._interval = store_interval  # the time between the last store and the next one
        # The last store was of a full batch (a backlog): the next is due when the batch is full again or
        # the stream is drained, whichever comes first; the interval does not apply (see _on_batch).
        self._catching_up = False
        self._linger = min(linger, flush_interval)
        self._max_wait = max(flush_interval, 0.1)
        self._on_stored = on_stored
        self._on_rejected = on_rejected
        self._on_store_failed = on_store_failed
        self._on_lag = on_lag
        # The items of each pull as the handler takes them (before they are stored), and the items of
        # each batch once its store is over (stored, refused or left for redelivery at a stop).
        self._on_delivered = on_delivered
        self._on_flushed = on_flushed
        self._handover = handover_interval
        self._handed_at = -1e9  # when (monotonic) the handler last took a pull
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
        self._held: Delivered[T] = Delivered()
        self._stored_at = -max(
            store_interval, busy_store_interval or 0.0
        )  # when (monotonic) the last store began
        self._flushing = asyncio.Lock()
        self._storing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._starting: asyncio.Task[None] | None = None
        self._pull = _PullState(self._stopping)
        self.running = asyncio.Event()
        # Declared on the broker (and so in its AsyncAPI document); started by start(). FastStream's own
        # wait for a batch is a token: each pull (``_pull_until_due``) waits until a store is due.
        self.subscriber = broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            durable=durable,
            config=_consumer_config(durable, subject, max_ack_pending, ack_wait),
            pull_sub=PullSub(
                batch_size=max(1, min(pull_size, batch_size)),
                timeout=0.001,
                batch=True,
            ),
            ack_policy=AckPolicy.MANUAL,
            inbox_prefix=OWN_INBOX,  # the NATS user's own inbox: FastStream's default `_INBOX.` is refused
            decoder=self._decode_batch,
            title=f"{durable}:{subject}",
            description=description,
        )

        async def handle(batch: Delivered[T]) -> None:
            await self._on_batch(batch)

        # What the AsyncAPI document shows: the body of the messages of a pull, in their published model
        # (``payload``). The handler gets them decoded by ``decode`` (FastStream's decoder here; apply_types
        # is off, so FastStream does not validate them a second time).
        handle.__annotations__["batch"] = list[payload]
        handle.__name__ = f"store_{durable.replace('-', '_')}"
        self.subscriber(handle)

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
        info = await self._broker.connection.jetstream().consumer_info(self._stream, self._durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def start(self) -> None:
        """Create or update the durable consumer and start pulling (retried in the background while the
        bus is away)."""
        await self._broker.connect()
        await ensure_durable_consumer(
            self._broker.connection.jetstream(),
            self._stream,
            self._durable,
            self._subject,
            self._max_ack_pending,
            self._ack_wait,
        )
        self._starting = asyncio.create_task(self._subscribe(), name=f"consumer-{self._durable}")

    async def _subscribe(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.subscriber.start()
            except Exception as exc:  # bus down: keep trying
                log.warning("cannot subscribe for consumer %s (%s); retrying", self._durable, exc)
                with contextlib.suppress(Exception):
                    await self.subscriber.stop()
                await asyncio.sleep(1.0)
                continue
            _pull_until_due(
                self.subscriber,
                self._hold_until,
                lambda: self._batch_bytes - self._held.size,
                self._linger,
                self._max_wait,
                self._pull,
            )
            self.running.set()
            return

    def _hold_until(self) -> float:
        """Until when (monotonic) a pull may hold what it has: the next store, or the next hand-over.
        Catching up, none: the pull returns when it is full or has taken what the stream holds."""
        if self._catching_up:
            return self._stored_at
        due = self._stored_at + self._interval
        if self._handover is None:
            return due
        return min(due, self._handed_at + self._handover)

    async def stop(self) -> None:
        """Stop pulling, store what the pull and the handler hold (insert and ack), then return."""
        self._stopping.set()
        # The pull in progress returns what it has, and the handler takes it, before FastStream stops
        # the subscriber (it would drop a pull's messages then: they would wait for ``ack_wait``).
        if self._pull.wake is not None:
            self._pull.wake()
        handed_over_by = time.monotonic() + 2.0
        while (self._pull.pulling or self._pull.unhandled) and time.monotonic() < handed_over_by:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # once, at a stop
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        with contextlib.suppress(Exception):
            await self.subscriber.stop()
        if self._timer is not None:
            self._timer.cancel()
        await self._flush_held()
        if self._storing is not None:
            with contextlib.suppress(Exception):
                await self._storing

    # -- handling ----------------------------------------------------------------------------------------

    async def _decode_batch(self, message: NatsMessage) -> Delivered[T]:
        """FastStream's decoder: every message of the pull, read once (one bad message spoils none other).
        A coroutine, so FastStream runs it on the event loop (a plain function goes to a worker thread)."""
        msgs: list[Msg] = message.raw_message  # type: ignore[assignment]  # a batch subscriber's
        delivered: Delivered[T] = Delivered(msgs=msgs)
        guard = self.guard
        decode = self._decode
        for msg in msgs:
            delivered.size += len(msg.data)
            try:
                item = decode(msg.data)
            except Exception as exc:  # whatever a message holds, it stops no other
                log.error("%s: a message cannot be read: %s", self._durable, exc)
                delivered.poisoned.add(id(msg))
                if guard is not None:
                    delivered.letters += guard.letters_of_decoding(msg, None, str(exc))
                continue
            delivered.items.append(item)
            if guard is not None:
                delivered.letters += guard.letters_of_decoding(msg, item, None)
        return delivered

    async def _on_batch(self, delivered: Delivered[T]) -> None:
        self._pull.unhandled = 0
        if not delivered.msgs:
            return
        self._handed_at = time.monotonic()
        if self._on_delivered is not None and delivered.items:
            try:
                self._on_delivered(delivered.items)
            except Exception:  # an observer: never in the way of storing
                log.exception("%s: on_delivered failed", self._durable)
        if self._on_lag is not None:
            with contextlib.suppress(Exception):
                self._on_lag(delivered.msgs[-1].metadata.num_pending)
        self._held.extend(delivered)
        due = self._stored_at + self._interval
        if (
            self._full(self._held)
            or time.monotonic() >= due
            # A backlog's last part: nothing is coming that a wait would share this insert with.
            or (self._catching_up and _pending_after(delivered.msgs[-1]) == 0)
        ):
            await self._flush_held()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(due, self._on_due)

    def _full(self, held: Delivered[T]) -> bool:
        return len(held.msgs) >= self._batch_size or held.size >= self._batch_bytes

    def _on_due(self) -> None:
        self._timer = None
        if self._held.msgs and not self._stopping.is_set():
            task = asyncio.create_task(self._flush_held())
            task.add_done_callback(_log_failure)

    async def _flush_held(self) -> None:
        """Hand what is held to a store. Stores run one at a time, in order (the id check always sees
        earlier batches); the next pull is decoded while one runs (ClickHouse works in its own threads)."""
        async with self._flushing:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._held.msgs:
                return
            held, self._held = self._held, Delivered()
            self._stored_at = time.monotonic()
            busy = held.size >= self._busy_store_bytes
            self._interval = self._busy_store_interval if busy else self._store_interval
            self._catching_up = self._full(held)
            if self._storing is not None:
                # Shielded: a stop cancelling the pull must not cancel a store half done. A store that
                # broke off (stopping, the bus gone) left its messages unacknowledged: they come back.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._storing)
            self._storing = asyncio.create_task(self._flush(held))

    async def _flush(self, batch: Delivered[T]) -> None:
        try:
            await self._store_and_ack(batch)
        finally:
            if self._on_flushed is not None and batch.items:
                try:
                    self._on_flushed(batch.items)
                except Exception:
                    log.exception("%s: on_flushed failed", self._durable)

    async def _store_and_ack(self, batch: Delivered[T]) -> None:
        msgs, items, poisoned = batch.msgs, batch.items, batch.poisoned
        if poisoned and self._on_rejected is not None:
            self._on_rejected(len(poisoned))
        started = time.perf_counter()
        if self.guard is not None:
            readable = [msg for msg in msgs if id(msg) not in poisoned]
            letters = batch.letters + await self.guard.store(list(zip(readable, items, strict=True)))
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


_STATUS = "Status"
_STATUS_HEARTBEAT = "100"
_STATUS_EXPIRED = "408"
_LONGEST_NAP = 0.25  # seconds between looks at what a held pull has brought


@dataclass
class _PullState:
    """What a consumer and its pull share, for a stop that loses no pulled message."""

    stopping: asyncio.Event
    pulling: bool = False  # a pull is in progress
    unhandled: int = 0  # messages a pull returned that the handler has not taken yet
    wake: Callable[[], None] | None = None  # ends a pull waiting for its first message


def _pull_until_due(
    subscriber: Any,
    hold_until: Callable[[], float],
    max_bytes: Callable[[], int],
    linger: float,
    max_wait: float,
    state: _PullState,
) -> None:
    """Replace the subscription's ``fetch`` (what FastStream's batch pull loop calls). nats-py's ends its
    pull request as soon as what is available was delivered: at a steady trickle, one request, one status
    message and one round of FastStream's loop per message. This one keeps one request open until a store
    is due (``hold_until()``, a ``time.monotonic()``; at most ``max_wait`` when nothing comes), for about
    ``max_bytes()`` of payload at most, and returns what arrived then: one request and one handler call per
    store at a steady rate. After a quiet spell (the store due already) it returns ``linger`` after the
    first message, once arrivals pause. It also returns when ``batch`` messages arrived, the request is over
    (the server's 408 when it expired, 404, 409), or the consumer stops (``state``).
    ``subscriber.start()`` created the subscription; its pull task has not run yet."""
    subscription = subscriber.subscription
    nc = subscription._nc
    queue: asyncio.Queue[Msg] = subscription._sub._pending_queue
    inner = subscription._sub
    open_requests: deque[float] = deque()  # when each request sent and not known over expires
    state.wake = lambda: queue.put_nowait(None)  # type: ignore[arg-type]  # read as "look again"

    def accept(msg: Msg | None, msgs: list[Msg]) -> str:
        """Count ``msg`` in; its status if it is one ("" if a message or a wake-up)."""
        if msg is None:
            return ""
        inner._pending_size -= len(msg.data)
        headers = msg.headers
        if headers and not msg.data and _STATUS in headers:
            return str(headers[_STATUS])
        msgs.append(msg)
        return ""

    async def fetch(  # nats-py's signature, which FastStream calls; its timeout is FastStream's, not ours
        batch: int = 1,
        timeout: float | None = None,  # noqa: ASYNC109
        heartbeat: float | None = None,
    ) -> list[Msg]:
        if state.stopping.is_set():
            await asyncio.sleep(0.05)  # FastStream's loop asks again at once until it is stopped
            raise nats_errors.TimeoutError
        state.pulling = True
        try:
            msgs = await pull(batch)
        finally:
            state.pulling = False
        state.unhandled = len(msgs)
        if not msgs:
            raise nats_errors.TimeoutError
        return msgs

    async def pull(batch: int) -> list[Msg]:
        msgs: list[Msg] = []
        # Left over from an earlier request (the statuses of requests already over are dropped).
        while not queue.empty() and len(msgs) < batch:
            accept(queue.get_nowait(), msgs)
        started = time.monotonic()
        hold = hold_until()
        # A little past the hold: the pull ends here, at the hold, not by the server's 408 a moment early.
        expires = max(hold - started + 0.05, max_wait)
        request = {"batch": batch - len(msgs), "expires": int(expires * 1e9)}
        room = max_bytes() - sum(len(m.data) for m in msgs)
        if room < _UNBOUNDED:
            # Bounds what one pull piles up when messages carry many events. Never below what one message
            # may weigh (the server's max_payload), or a large message would never come.
            request["max_bytes"] = max(room, nc.max_payload or _LARGEST_MESSAGE)
        while open_requests and open_requests[0] < started - 2.0:
            open_requests.popleft()  # its 408 was lost
        mine = started + expires
        if len(msgs) < batch:
            open_requests.append(mine)
            await nc.publish(subscription._nms, json.dumps(request).encode(), reply=subscription._deliver)
        deadline = started + expires + 0.5  # the server's 408 comes first, unless it was lost
        first_at = 0.0
        over = False
        empty_nap = 0.005

        def take(msg: Msg) -> None:
            nonlocal over, first_at
            if not msgs:
                first_at = time.monotonic()
            status = accept(msg, msgs)
            if status == _STATUS_EXPIRED and open_requests:
                # Requests expire in the order they were sent: this 408 may end an earlier one, which a
                # pull that returned at its hold left open.
                over = open_requests.popleft() == mine
            elif status and status != _STATUS_HEARTBEAT:
                over = True  # nothing left (404), refused (409)

        # Woken by the first message only when a store is due already; otherwise the queue is looked at
        # when the store falls due, or sooner if the batch may have filled (not once per message).
        while not over and len(msgs) < batch and not state.stopping.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            # A backlog (the stream holds more than was delivered): take messages as they come until the
            # pull is full or over; naps paced for a trickle would leave the pull idle between them.
            backlog = bool(msgs) and _pending_after(msgs[-1]) > 0
            if backlog:
                try:
                    async with asyncio.timeout(deadline - now):
                        take(await queue.get())
                except TimeoutError:
                    break
            elif now < hold:
                if msgs:  # the time the pull would take to fill (messages or bytes) at the rate seen so far
                    got = sum(len(m.data) for m in msgs) or 1
                    left = min((batch - len(msgs)) / len(msgs), max(room - got, 0) / got)
                    nap = left * (now - started)
                else:  # nothing yet: look again soon, then less and less often
                    nap, empty_nap = empty_nap, min(empty_nap * 2, _LONGEST_NAP)
                # A plain sleep (a stop is noticed after it, within _LONGEST_NAP).
                await asyncio.sleep(max(0.002, min(hold - now, nap, _LONGEST_NAP)))
            elif not msgs:
                try:
                    async with asyncio.timeout(deadline - now):
                        take(await queue.get())
                except TimeoutError:
                    break
            elif now - first_at < linger:
                await asyncio.sleep(first_at + linger - now)
            elif queue.empty() or first_at < hold:
                break  # due, and held since before, or lingered and arrivals paused
            else:
                await asyncio.sleep(0.005)  # still arriving: a moment more
            while not over and not queue.empty() and len(msgs) < batch:
                take(queue.get_nowait())
        if len(msgs) >= batch and mine in open_requests:
            open_requests.remove(mine)  # filled: the server sends no 408 for it
        return msgs

    subscription.fetch = fetch


def _pending_after(msg: Msg) -> int:
    """Messages of the stream not yet delivered to the consumer after ``msg`` (0 when unknown)."""
    try:
        return msg.metadata.num_pending or 0
    except Exception:  # not a JetStream message (a test's stand-in): no backlog known
        return 0


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("storing a held batch failed", exc_info=task.exception())
