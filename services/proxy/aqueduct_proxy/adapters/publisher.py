"""Usage events to JetStream, off the response path, losing none while the bus is away or the process dies.

Write-ahead journal: every event is first appended to this process's current journal segment
(``usage-<pid>-<uuid>.wal`` in the spool folder, one ``os.write`` of its line), then queued in memory. A
background task publishes what gathered: up to ``events_per_message`` events to a message, as a JSON array
(a lone event goes as a bare object), through the broker's FastStream publisher of the usage stream
(``aqueduct_libs.publishers``), several messages in flight at once; rounds start at most ``linger``
(50 ms) apart unless a full message is waiting, so a steady stream costs a message per ``linger``. A message's ``Nats-Msg-Id`` is
derived from its event ids (a lone event: its ``event_id``), so re-sending the same message is de-duplicated
by JetStream; accounting de-duplicates by ``event_id`` whatever the grouping. One message per event would
cost the proxy a publish and an acknowledgement per request, and accounting one NATS message per row (about
25,000 per second is what nats-py can read). A segment rotates at ``segment_bytes`` or after
``segment_seconds`` and is deleted once every event in it has been acknowledged by JetStream.

There is no fsync by default: the written page sits in the kernel's page cache, which survives the death of
the process (SIGKILL, OOM kill), the failure covered here. A crash of the machine itself can still lose the
last pages not yet written back, unless ``fsync`` is on (one fsync per event: far slower).

Ownership is one mechanism for every file of the spool folder: a file belongs to the process holding an
exclusive ``flock`` on it, so a live process's segment is never taken over (several worker processes share
the folder). At start, when the spill files are due, and every ``claim_interval`` seconds while idle, files
nobody holds are taken over: segments of a dead process, spill files, files a dead process had taken over.
They are locked, read into the buffer, and deleted once all their events are acknowledged; a crash
meanwhile frees them for the next taker. Events that had already been delivered are sent again: JetStream's
duplicate window (``aqueduct_libs.bus.DUPLICATE_WINDOW_SECONDS``) and accounting's dedup by event id make
that harmless, so nothing is counted twice.

While NATS is unreachable the buffer grows up to ``max_buffered``; beyond that, and at shutdown, events are
spilled to fsynced JSON-lines files (``usage-*.jsonl``), which are taken over like any unowned file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

import orjson
from faststream.nats import NatsBroker

from aqueduct_libs import names
from aqueduct_libs.events import UsageRecorded
from aqueduct_libs.publishers import publish_all, usage_publisher

__all__ = ["UsagePublisher"]

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC


class _Segment:
    """A journal or taken-over file held (locked) by this process, with its events not yet settled."""

    __slots__ = ("fd", "opened", "path", "pending", "sealed", "size")

    def __init__(self, path: Path, fd: int, *, pending: int = 0, sealed: bool = False) -> None:
        self.path = path
        self.fd = fd
        self.pending = pending  # events written here, neither acknowledged nor spilled yet
        self.size = 0
        self.opened = time.monotonic()
        self.sealed = sealed  # no more appends: deleted as soon as pending reaches 0


_Entry = tuple[bytes, _Segment | None]  # (event_id \t json, the file that keeps it until settled)
# (Nats-Msg-Id, payload, the entries it settles, the id of its last event)
_Message = tuple[str, bytes, list[_Entry], bytes]


class UsagePublisher:
    def __init__(
        self,
        broker: NatsBroker,  # connected
        spool_dir: Path,
        *,
        max_buffered: int = 100_000,
        batch_size: int = 1000,
        events_per_message: int = 100,
        max_message_bytes: int = 256 * 1024,
        publish_timeout: float = 2.0,
        linger: float = 0.05,
        segment_bytes: int = 4 * 1024 * 1024,
        segment_seconds: float = 5.0,
        fsync: bool = False,
        claim_interval: float = 30.0,
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        self._broker = broker
        # The broker's FastStream publisher of the usage stream: a batch's messages are published
        # concurrently, each waiting for its JetStream acknowledgement (its cost is per message, and a
        # message carries up to ``events_per_message`` events).
        self._publisher = usage_publisher(broker)
        self._spool_dir = spool_dir
        self._max_buffered = max_buffered
        self._batch_size = batch_size
        self._events_per_message = max(1, events_per_message)
        self._max_message_bytes = max_message_bytes
        self._timeout = publish_timeout
        self._linger = linger
        self._segment_bytes = segment_bytes
        self._segment_seconds = segment_seconds
        self._fsync = fsync
        self._claim_interval = claim_interval
        self._buffer: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._spilled = False
        self._in_flight: list[_Entry] = []
        # Last event ids of messages whose publish was not confirmed: they are sent again as the same
        # messages (same events, same id), so JetStream drops them if the first send was stored after all.
        self._resend_ends: set[bytes] = set()
        self._segment: _Segment | None = None  # the one being appended to
        self._held: dict[str, _Segment] = {}  # every file this process holds, by name
        self._journal_retry_at = 0.0
        self._next_claim = 0.0
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
        line = event_id.encode() + b"\t" + payload
        self._buffer.append((line, self._append(line)))
        if len(self._buffer) > self._max_buffered:
            self._spill(self._max_buffered // 2)
        self._wake.set()

    async def start(self) -> None:
        self._spool_dir.mkdir(parents=True, exist_ok=True)
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
        self._segment = None
        for segment in list(self._held.values()):
            if segment.pending == 0:
                self._release(segment)
            else:  # the spill failed: unlocked, the next start takes these over
                self._held.pop(segment.path.name, None)
                os.close(segment.fd)

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            self._rotate_by_age()
            if not self._buffer:
                if self._closing:
                    return
                now = time.monotonic()
                if self._spilled or now >= self._next_claim:
                    # Idle (the bus keeps up): deliver what overflowed to disk, and what dead processes left.
                    self._spilled = False
                    self._next_claim = now + self._claim_interval
                    self._claim_spool()
                    if self._buffer:
                        continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self._segment_seconds, self._claim_interval)):
                        await self._wake.wait()
                if self._linger and self._buffer and not self._closing:
                    # Let a few more events gather: fewer, larger batches, and the publishing work stays
                    # out of the way of the requests that are being answered right now.
                    await asyncio.sleep(self._linger)
                continue
            batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
            self._in_flight = batch
            round_started = time.monotonic()
            failed = await self._publish(batch)
            self._in_flight = []
            if (
                not failed
                and self._linger
                and not self._closing
                and 0 < len(self._buffer) < self._events_per_message
            ):
                # A steady stream goes out in rounds at most ``linger`` apart (not one small message per
                # acknowledgement round trip): fewer messages for the proxy, NATS and accounting alike.
                await asyncio.sleep(max(0.0, round_started + self._linger - time.monotonic()))
            if failed:
                # Keep their order ahead of newer events; the same ids are re-sent, so retries are safe.
                self._buffer.extendleft(reversed(failed))
                if self._closing and not self._broker.connection.is_connected:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            else:
                backoff = 0.1

    def _messages(self, batch: list[_Entry]) -> list[_Message]:
        """Group a batch into messages. An event met twice in the batch (taken over from two files) is
        sent once and settled with its first copy."""
        messages: list[_Message] = []
        ids: list[bytes] = []
        payloads: list[bytes] = []
        entries: list[_Entry] = []
        first: dict[bytes, list[_Entry]] = {}
        size = 0
        resend_ends, self._resend_ends = self._resend_ends, set()
        for entry in batch:
            event_id, _, payload = entry[0].partition(b"\t")
            if event_id in first:
                first[event_id].append(entry)
                continue
            if ids and (
                len(ids) >= self._events_per_message or size + len(payload) > self._max_message_bytes
            ):
                messages.append(_message(ids, payloads, entries))
                ids, payloads, entries, size = [], [], [], 0
            ids.append(event_id)
            payloads.append(payload)
            entries.append(entry)
            first[event_id] = entries
            size += len(payload)
            if event_id in resend_ends:
                messages.append(_message(ids, payloads, entries))
                ids, payloads, entries, size = [], [], [], 0
        if ids:
            messages.append(_message(ids, payloads, entries))
        return messages

    async def _publish(self, batch: list[_Entry]) -> list[_Entry]:
        """Publish a batch, its messages all in flight at once; an event counts once JetStream acknowledged
        the message that carries it (a de-duplicated re-send is acknowledged too)."""
        messages = self._messages(batch)
        results = await publish_all(
            self._publisher,
            ((names.USAGE_SUBJECT, payload, message_id) for message_id, payload, _, _ in messages),
            self._timeout,
        )
        delivered: list[_Entry] = []
        failed: list[_Entry] = []
        for (_, _, entries, last_id), result in zip(messages, results, strict=True):
            if isinstance(result, BaseException):  # no acknowledgement, or an error from JetStream
                failed += entries
                self._resend_ends.add(last_id)
            else:
                delivered += entries
        self._settle(delivered)
        self.published += len(delivered)
        if self._on_published and delivered:
            self._on_published(len(delivered))
        if failed:
            log.warning("%d usage events not delivered yet; %d buffered", len(failed), len(self._buffer))
        return failed

    # -- journal ---------------------------------------------------------------------------------------

    def _append(self, line: bytes) -> _Segment | None:
        """Write one event to the current segment; ``None`` when the journal is unwritable (the event then
        lives in memory only, as before the journal existed: serving goes on)."""
        segment = self._segment
        if segment is None or segment.size >= self._segment_bytes:
            segment = self._rotate()
            if segment is None:
                return None
        data = line + b"\n"
        try:
            written = os.write(segment.fd, data)
            while written < len(data):
                written += os.write(segment.fd, data[written:])
            if self._fsync:
                os.fsync(segment.fd)
        except OSError as exc:
            # A partial line may be on disk: seal the segment (readers drop a torn last line) and retry later.
            log.error("usage journal %s not writable (%s); events kept in memory only", segment.path, exc)
            self._seal(segment)
            self._journal_retry_at = time.monotonic() + 1.0
            return None
        segment.size += len(data)
        segment.pending += 1
        return segment

    def _rotate(self) -> _Segment | None:
        if self._segment is not None:
            self._seal(self._segment)
        if time.monotonic() < self._journal_retry_at:
            return None
        name = f"usage-{os.getpid()}-{uuid.uuid4().hex}.wal"
        # Created and locked under a name no taker looks at, then renamed: never visible unlocked.
        hidden = self._spool_dir / f".{name}"
        try:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(hidden, _OPEN_FLAGS, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(hidden, self._spool_dir / name)
        except OSError as exc:
            log.error("cannot open a usage journal segment in %s (%s)", self._spool_dir, exc)
            self._journal_retry_at = time.monotonic() + 1.0
            return None
        segment = _Segment(self._spool_dir / name, fd)
        self._segment = self._held[name] = segment
        return segment

    def _rotate_by_age(self) -> None:
        segment = self._segment
        if segment is not None and time.monotonic() - segment.opened >= self._segment_seconds:
            self._seal(segment)

    def _seal(self, segment: _Segment) -> None:
        segment.sealed = True
        if self._segment is segment:
            self._segment = None
        if segment.pending == 0:
            self._release(segment)

    def _settle(self, entries: list[_Entry]) -> None:
        """These events are acknowledged or spilled: their files no longer need to keep them."""
        for _, segment in entries:
            if segment is not None:
                segment.pending -= 1
                if segment.pending == 0 and segment.sealed:
                    self._release(segment)

    def _release(self, segment: _Segment) -> None:
        # Deleted while still locked, so a taker that opened the path meanwhile sees it is gone.
        self._held.pop(segment.path.name, None)
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        os.close(segment.fd)

    # -- spool -----------------------------------------------------------------------------------------

    def _spill(self, count: int) -> None:
        """Move the ``count`` oldest buffered events to a new spool file (written whole, then renamed)."""
        entries = [self._buffer.popleft() for _ in range(min(count, len(self._buffer)))]
        if not entries:
            return
        name = f"usage-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
        tmp = self._spool_dir / f".{name}.tmp"
        try:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(b"\n".join(line for line, _ in entries) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(self._spool_dir / name)
        except OSError as exc:
            log.error("cannot spool %d usage events to %s (%s)", len(entries), self._spool_dir, exc)
            self._buffer.extendleft(reversed(entries))
            return
        self._spilled = True
        self._settle(entries)  # the spool file keeps them now
        log.warning("spooled %d usage events to %s", len(entries), self._spool_dir / name)

    def _claim_spool(self) -> None:
        """Take over every file of the spool folder that no live process holds (see the module doc)."""
        if not self._spool_dir.is_dir():
            return
        for path in sorted(self._spool_dir.glob("usage-*")):
            if path.name in self._held:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Taken over and deleted by another process between our open and our lock: not ours.
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise FileNotFoundError(path)
                data = path.read_bytes()
            except OSError:  # BlockingIOError: a live process holds it
                os.close(fd)
                continue
            lines = _complete_lines(data)
            segment = _Segment(path, fd, pending=len(lines), sealed=True)
            self._held[path.name] = segment
            self._buffer.extend((line, segment) for line in lines)
            if lines:
                log.info("re-delivering %d usage events from %s", len(lines), path.name)
            else:
                self._release(segment)


def _message(ids: list[bytes], payloads: list[bytes], entries: list[_Entry]) -> _Message:
    """One message: a lone event as itself, several as a JSON array."""
    if len(ids) == 1:
        return ids[0].decode(), payloads[0], entries, ids[0]
    # The same events in the same order give the same id: JetStream drops a re-sent message.
    message_id = "b-" + hashlib.blake2b(b"\n".join(ids), digest_size=16).hexdigest()
    return message_id, b"[" + b",".join(payloads) + b"]", entries, ids[-1]


def _complete_lines(data: bytes) -> list[bytes]:
    """The events of a spool or journal file; a line cut short by a crash mid-write is dropped."""
    lines = data.split(b"\n")
    if lines and lines[-1]:
        log.warning("dropping a torn last line (%d bytes) of a usage journal", len(lines[-1]))
    # Several events travel in one message (a JSON array): one unreadable line would spoil the whole
    # message for accounting, so a line from disk is checked before it is sent again.
    return [line for line in lines[:-1] if _readable(line)]


def _readable(line: bytes) -> bool:
    event_id, tab, payload = line.partition(b"\t")
    if not tab or not event_id or not payload.endswith(b"}"):
        return False
    try:
        return isinstance(orjson.loads(payload), dict)
    except orjson.JSONDecodeError:
        log.warning("dropping an unreadable line of a usage journal")
        return False
