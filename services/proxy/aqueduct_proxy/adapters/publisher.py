"""Usage events to JetStream, off the response path, losing none while the bus is away.

Requests only append to an in-memory buffer. A background task publishes in concurrent batches with
``Nats-Msg-Id = event_id``, so a retried publish is de-duplicated by JetStream and by accounting.
While NATS is unreachable the buffer grows up to ``max_buffered``; beyond that, and at shutdown, events
are spilled to JSON-lines files under the spool folder, which are delivered first thing after a start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aqueduct_libs import names
from aqueduct_libs.events import UsageRecorded

__all__ = ["UsagePublisher"]

log = logging.getLogger(__name__)


class UsagePublisher:
    def __init__(
        self,
        nc: NATS,
        spool_dir: Path,
        *,
        max_buffered: int = 100_000,
        batch_size: int = 256,
        publish_timeout: float = 2.0,
        linger: float = 0.01,
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._acks: dict[str, asyncio.Future[bool]] = {}
        self._sequence = 0
        self._spool_dir = spool_dir
        self._max_buffered = max_buffered
        self._batch_size = batch_size
        self._timeout = publish_timeout
        self._linger = linger
        self._buffer: deque[bytes] = deque()  # serialised events: (event_id \t json)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._spilled = False
        self._in_flight: list[bytes] = []
        self._claimed: list[Path] = []
        self._on_published = on_published
        self.published = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def record(self, event: UsageRecorded) -> None:
        """Called on the request path: never blocks, never raises for a bus problem."""
        self.record_json(event.event_id, event.model_dump_json().encode())

    def record_json(self, event_id: str, payload: bytes) -> None:
        """``record`` for an event already serialised (the proxy's hot path builds the JSON itself)."""
        self._buffer.append(event_id.encode() + b"\t" + payload)
        if len(self._buffer) > self._max_buffered:
            self._spill(self._max_buffered // 2)
        self._wake.set()

    async def start(self) -> None:
        # One wildcard subscription receives every acknowledgement (re-subscribed by nats-py on reconnect).
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        self._claim_spool()
        self._task = asyncio.create_task(self._run(), name="usage-publisher")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Deliver what is buffered within ``drain_timeout``, persist the rest to the spool."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), drain_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                # Unconfirmed events of the interrupted batch go back (a re-send is de-duplicated).
                self._buffer.extendleft(reversed(self._in_flight))
                self._in_flight = []
        if self._buffer:
            self._spill(len(self._buffer))
        self._release_claimed()  # their events are delivered or in the new spool file

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._buffer:
                self._release_claimed()
                if self._closing:
                    return
                if self._spilled:
                    self._spilled = False
                    self._claim_spool()  # the bus is back: deliver what overflowed to disk
                    continue
                self._wake.clear()
                await self._wake.wait()
                if self._linger and not self._closing:
                    # Let a few more events gather: fewer, larger batches, and the publishing work stays
                    # out of the way of the requests that are being answered right now.
                    await asyncio.sleep(self._linger)
                continue
            batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
            self._in_flight = batch
            failed = await self._publish(batch)
            self._in_flight = []
            if failed:
                # Keep their order ahead of newer events; the same ids are re-sent, so retries are safe.
                self._buffer.extendleft(reversed(failed))
                if self._closing and not self._nc.is_connected:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            else:
                backoff = 0.1

    async def _publish(self, batch: list[bytes]) -> list[bytes]:
        """Publish a batch with one shared reply inbox; an event counts once JetStream acknowledged it."""
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[bool]] = []
        for line in batch:
            event_id, _, payload = line.partition(b"\t")
            waiter: asyncio.Future[bool] = loop.create_future()
            waiters.append(waiter)
            self._sequence += 1
            token = str(self._sequence)
            self._acks[token] = waiter
            try:
                await self._nc.publish(
                    names.USAGE_SUBJECT,
                    payload,
                    reply=f"{self._inbox}.{token}",
                    headers={"Nats-Msg-Id": event_id.decode()},
                )
            except Exception:  # any bus failure: keep the event and try again later
                self._acks.pop(token, None)
                waiter.set_result(False)
        await asyncio.wait(waiters, timeout=self._timeout)
        results = [w.done() and w.result() for w in waiters]
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()
        if len(self._acks) > 10 * self._batch_size:  # acks that never came (bus restarts)
            self._acks = {t: w for t, w in self._acks.items() if not w.done()}
        ok = sum(results)
        self.published += ok
        if self._on_published and ok:
            self._on_published(ok)
        if ok < len(batch):
            log.warning("%d usage events not delivered yet; %d buffered", len(batch) - ok, len(self._buffer))
        return [line for line, done in zip(batch, results, strict=True) if not done]

    async def _on_ack(self, msg: Msg) -> None:
        waiter = self._acks.pop(msg.subject.rpartition(".")[2], None)
        if waiter is None or waiter.done():
            return
        # A stored (or de-duplicated) message answers {"stream":..,"seq":..}; no stream answers a 503 status.
        waiter.set_result(bool(msg.data) and b'"error"' not in msg.data)

    # -- spool -----------------------------------------------------------------------------------------

    def _spill(self, count: int) -> None:
        """Move the ``count`` oldest buffered events to a new spool file (written whole, then renamed)."""
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        lines = [self._buffer.popleft() for _ in range(min(count, len(self._buffer)))]
        if not lines:
            return
        name = f"usage-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        tmp = self._spool_dir / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"\n".join(lines) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(self._spool_dir / name)
        self._spilled = True
        log.warning("spooled %d usage events to %s", len(lines), self._spool_dir / name)

    def _claim_spool(self) -> None:
        """Take over spool files: renamed first, so two replicas never deliver the same file; a claimed
        file is deleted only once all of its events are acknowledged, so a crash meanwhile loses none
        (the next start takes over files claimed by a process that is gone)."""
        if not self._spool_dir.is_dir():
            return
        candidates = sorted(self._spool_dir.glob("usage-*.jsonl"))
        candidates += [p for p in sorted(self._spool_dir.glob("usage-*.claimed-*")) if not _alive(p)]
        for path in candidates:
            claimed = path.with_name(f"{path.name.split('.')[0]}.claimed-{os.getpid()}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue  # another replica took it
            lines = [line for line in claimed.read_bytes().split(b"\n") if line]
            self._buffer.extend(lines)
            self._claimed.append(claimed)
            log.info("re-delivering %d spooled usage events from %s", len(lines), path.name)

    def _release_claimed(self) -> None:
        """Everything buffered was acknowledged: the claimed spool files are delivered."""
        while self._claimed:
            self._claimed.pop().unlink(missing_ok=True)


def _alive(path: Path) -> bool:
    try:
        os.kill(int(path.name.rsplit("-", 1)[1]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
