"""Stream handler: the durable JetStream pull consumer that feeds usage events into ClickHouse.

Flushes when ``batch_size`` events are buffered, when the stream is drained and the batch has lingered
briefly, or after ``flush_interval`` at the latest. Messages are acknowledged only after their batch is
stored; a failed insert is retried with the same messages, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from pydantic import ValidationError

from aqueduct_accounting.adapters.metrics import AccountingMetrics
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_libs import names
from aqueduct_libs.events import UsageRecorded

__all__ = ["UsageConsumer", "ensure_durable_consumer"]

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
    await js.add_consumer(stream, config)


class UsageConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        ingest: UsageIngest,
        metrics: AccountingMetrics,
        *,
        durable: str,
        batch_size: int,
        flush_interval: float,
        max_ack_pending: int,
        ack_wait: float,
        linger: float = 0.05,
        on_flushed: Callable[[], None] | None = None,
    ) -> None:
        self._js = js
        self._ingest = ingest
        self._metrics = metrics
        self._durable = durable
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_ack_pending = max_ack_pending
        self._ack_wait = ack_wait
        self._linger = min(linger, flush_interval)
        self._on_flushed = on_flushed
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running = asyncio.Event()

    async def start(self) -> None:
        await ensure_durable_consumer(
            self._js,
            names.USAGE_STREAM,
            self._durable,
            names.USAGE_SUBJECT,
            self._max_ack_pending,
            self._ack_wait,
        )
        self._task = asyncio.create_task(self._run(), name="usage-consumer")

    async def stop(self) -> None:
        """Finish the batch in hand (insert and ack), then stop."""
        self._stopping.set()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                sub = await self._js.pull_subscribe_bind(
                    durable=self._durable,
                    stream=names.USAGE_STREAM,
                    pending_msgs_limit=self._max_ack_pending * 2,
                )
            except Exception as exc:  # bus down or stream missing: keep trying
                log.warning("cannot bind the usage consumer (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            self.running.set()
            try:
                await self._consume(sub)
            except Exception:
                # Whatever broke (a JetStream status, the bus going away), what was not acked comes back.
                log.exception("the usage consumer broke; binding again")
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _consume(self, sub: JetStreamContext.PullSubscription) -> None:
        buffer: list[Msg] = []
        first_at = 0.0
        while True:
            stopping = self._stopping.is_set()
            age = time.monotonic() - first_at if buffer else 0.0
            drained = False
            if not stopping:
                want = self._batch_size - len(buffer)
                wait = self._flush_interval if not buffer else max(self._linger - age, 0.02)
                try:
                    msgs = await sub.fetch(want, timeout=wait)
                except nats.errors.TimeoutError:
                    msgs = []
                except (nats.errors.ConnectionClosedError, nats.errors.NoRespondersError) as exc:
                    log.warning("usage fetch failed (%s)", exc)
                    msgs = []
                    await asyncio.sleep(0.5)
                if msgs:
                    if not buffer:
                        first_at = time.monotonic()
                    buffer.extend(msgs)
                    with contextlib.suppress(Exception):
                        self._metrics.lag.set(msgs[-1].metadata.num_pending)
                drained = len(msgs) < want
                age = time.monotonic() - first_at if buffer else 0.0
            if buffer and (
                stopping
                or len(buffer) >= self._batch_size
                or (drained and age >= self._linger)
                or age >= self._flush_interval
            ):
                await self._flush(buffer)
                buffer = []
            if stopping:
                return

    async def _flush(self, msgs: list[Msg]) -> None:
        events: list[UsageRecorded] = []
        poison: list[Msg] = []
        for msg in msgs:
            try:
                events.append(UsageRecorded.model_validate_json(msg.data))
            except ValidationError as exc:
                log.error("dropping a message that is not a UsageRecorded event: %s", exc)
                poison.append(msg)
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                result = await self._ingest.ingest(events)
                break
            except Exception:
                # Not acked, so nothing is lost; retry the same events (the id check absorbs repeats).
                self._metrics.insert_failures.inc()
                log.exception("inserting %d usage events failed; retrying in %.1fs", len(events), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._metrics.insert_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(events))
        self._metrics.ingested.inc(result.inserted)
        self._metrics.duplicates.inc(result.duplicates)
        self._metrics.rejected.inc(len(poison))
        poisoned = {id(msg) for msg in poison}
        for msg in msgs:
            if id(msg) in poisoned:
                await msg.term()  # never redelivered: it can never become valid
            else:
                await msg.ack()
        if self._on_flushed is not None:
            self._on_flushed()
