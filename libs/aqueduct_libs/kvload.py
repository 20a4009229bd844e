"""Following a KV bucket through its stream, in large batches: the engine behind ``KVWatcher``.

nats-py's ``KeyValue.watch`` is an ordered push consumer: one message at a time, flow control, a task
per update; a proxy needed seconds to load a large auth snapshot that way. This reads the bucket's
stream (``KV_<bucket>``) with one ephemeral pull consumer that delivers the last entry of every key and
then every later change, so the initial load and the live updates are one sequence in stream order: no
gap between them and nothing applied twice (a replayed put after a delete could resurrect a key).

Only a stream's leader creates a consumer, and a NATS cluster that lost the node leading it elects
another in 4 to 9 s. A watch starting meanwhile (a proxy restarted then) does not wait: when the leader
has not answered within ``LEADER_WAIT``, it loads with JetStream's batched direct gets
(``$JS.API.DIRECT.GET.<stream>`` with ``next_by_subj`` and ``batch``, nats-server 2.11+), which any
replica of a bucket with ``allow_direct`` answers (``bus.ensure_kv``), page after page in stream order,
then follows with a consumer that starts right after the last sequence loaded, created once there is a
leader again (the directory's pushed changes, ``snapshot_push``, cover that wait). A follower may be a
few writes behind its leader; the follow starts after what it loaded, so those arrive right after.

Pull requests are sent as plain messages (``$JS.API.CONSUMER.MSG.NEXT``) and the answers collected in a
callback, as in the accounting service's ingest. The consumer acknowledges nothing, so a message lost on
the way (a dropped connection) is noticed by its consumer sequence, and the follow ends with
``FollowBrokenError``; the caller starts over with a full replay (by the consumer: a replay from a
follower during an election could undo a change pushed meanwhile, see ``follow_bucket``).

A consumer load ends when the consumer says nothing is pending after an entry, or had nothing to deliver
at all (its count comes from creating it, after every write acknowledged before that, so a key written
just before the load cannot be missed); a direct load when a page says nothing matching is left after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.nuid import NUID

__all__ = ["FollowBrokenError", "follow_bucket"]

OnPut = Callable[[str, bytes], Awaitable[None] | None]
OnDelete = Callable[[str], Awaitable[None] | None]

BATCH = 5000  # entries per pull request
MAX_BYTES = 8 * 1024 * 1024  # payload per pull request (never below the server's max_payload)
EXPIRES = 10.0  # seconds a pull request waits for changes; then the consumer's health is checked
# The server says "still here" this often while a pull request is open. Silence for SILENCE seconds means
# the request died with the server holding the consumer (a NATS cluster node lost while the client is
# connected to another one, so no reconnect tells us): the consumer is checked at once, not at EXPIRES.
HEARTBEAT = 1.0
SILENCE = 3.5 * HEARTBEAT
CHECK_TIMEOUT = 2.0
# How long a starting watch waits for the stream's leader to create its consumer before it loads from any
# replica instead (direct gets): a NATS cluster electing a leader answers no consumer request for 4-9 s.
LEADER_WAIT = 0.5
INACTIVE_THRESHOLD = 30.0  # the server drops the consumer this long after its follower is gone

_STATUS = "Status"
_DESCRIPTION = "Description"
_HEARTBEAT = "100"
_EXPIRED = "408"
# 409s that end one pull request while the consumer lives on.
_REQUEST_ENDED = ("Message Size Exceeds MaxBytes", "Leadership Change", "Batch Completed")
_END_OF_BATCH = "204"
_NOT_FOUND = "404"
_NO_RESPONDERS = "503"
_SUBJECT = "Nats-Subject"
_SEQUENCE = "Nats-Sequence"
_PENDING = "Nats-Num-Pending"
_PREVIOUS = "Nats-Last-Sequence"  # on an entry: the one before it in this batch (0 for the first)
_KV_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"  # nats-server 2.11+ markers for keys removed by age or TTL
_DELETED_OPERATIONS = frozenset({"DEL", "PURGE"})
_DELETED_MARKERS = frozenset({"MaxAge", "Purge", "Remove"})
_nuid = NUID()


class FollowBrokenError(Exception):
    """The consumer is gone, refused a request, or updates were lost: start over with a full replay."""


def _position(reply: str) -> tuple[int, int]:
    """(consumer sequence, pending) from a JetStream reply subject, in either of its two layouts:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, or with ``<domain>.
    <account hash>`` after ``ACK`` and possibly a trailing token."""
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    return int(tokens[base + 4]), int(tokens[base + 6])


def _is_delete(msg: Msg) -> bool:
    headers = msg.headers
    if not headers:
        return False
    operation = headers.get(_KV_OPERATION)
    if operation is not None:
        return operation in _DELETED_OPERATIONS
    return headers.get(_MARKER_REASON) in _DELETED_MARKERS


class _DirectLoad:
    """The last entry of every key matching a filter, read with batched direct gets in stream order.

    ``entries`` maps each key to its last value (``None`` for a deleted key), in the order of those last
    entries; ``sequence`` is the last stream sequence looked at. A key written again during the load
    moves to the end, so a bucket that keeps history applies only each key's last entry, once.
    """

    def __init__(self, nc: NATS, api_prefix: str, stream: str, subjects: str, skip: int) -> None:
        self._nc = nc
        self._subject = f"{api_prefix}.DIRECT.GET.{stream}"
        self._filter = subjects
        self._skip = skip
        self._page: list[Msg] = []
        self._end: dict[str, str] = {}
        self._done = asyncio.Event()
        self.entries: dict[str, bytes | None] = {}
        self.sequence = 0

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        if _STATUS in headers and _SEQUENCE not in headers:
            self._end = {str(k): v for k, v in headers.items()}
            self._done.set()
        else:
            self._page.append(msg)

    async def run(self) -> bool:
        """Load everything; False when no replica answers direct gets: a bucket without ``allow_direct``,
        a missing one, or followers that lost their leader a moment ago (they stop answering for a
        second or two, until they know)."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(
            inbox, cb=self._on_msg, pending_msgs_limit=2 * BATCH + 100, pending_bytes_limit=-1
        )
        try:
            while True:
                status = await self._next_page(inbox)
                if status == _NO_RESPONDERS and not self.sequence:
                    return False
                if status == _NOT_FOUND:  # nothing matches after ``sequence``
                    return True
                elif status != _END_OF_BATCH:
                    description = self._end.get(_DESCRIPTION, "")
                    raise FollowBrokenError(f"a direct get was refused: {status} {description}".strip())
                if not int(self._end.get(_PENDING) or 0):
                    return True
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _next_page(self, inbox: str) -> str:
        """Ask for the batch after ``sequence``, take in its entries, and return its final status."""
        self._page, self._end = [], {}
        self._done.clear()
        body = {
            "seq": self.sequence + 1,
            "next_by_subj": self._filter,
            "batch": BATCH,
            "max_bytes": max(MAX_BYTES, self._nc.max_payload or 0),
        }
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=inbox)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._done.wait()
        except TimeoutError:
            raise FollowBrokenError("a direct get was not answered in time") from None
        status = self._end.get(_STATUS, "")
        if status != _END_OF_BATCH:
            return status
        previous = 0
        for msg in self._page:
            headers = msg.headers or {}
            if int(headers.get(_PREVIOUS) or 0) != previous:
                raise FollowBrokenError("entries of a direct get were lost on the way")
            previous = int(headers[_SEQUENCE])
            key = headers[_SUBJECT][self._skip :]
            self.entries.pop(key, None)  # its last entry goes last
            self.entries[key] = None if _is_delete(msg) else msg.data
        if int(self._end.get(_PREVIOUS) or 0) != previous:
            raise FollowBrokenError("entries of a direct get were lost on the way")
        self.sequence = max(self.sequence, previous)
        return status

    async def apply(self, on_put: OnPut, on_delete: OnDelete) -> None:
        for n, (key, value) in enumerate(self.entries.items(), 1):
            result = on_delete(key) if value is None else on_put(key, value)
            if asyncio.iscoroutine(result):
                await result
            if n % BATCH == 0:
                await asyncio.sleep(0)  # a large load does not hold the event loop in one go
        self.entries = {}


class _Pulls:
    """One pull request open at a time on an ephemeral consumer; what it delivers piles up in a list."""

    def __init__(self, js: JetStreamContext, nc: NATS, stream: str, consumer: str) -> None:
        self._js = js
        self._nc = nc
        self._stream = stream
        self._consumer = consumer
        self._subject = f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"  # "$JS.API" or a domain's
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._arrived: list[Msg] = []
        self._open = False
        self._remaining = 0
        self._deadline = 0.0
        self._reconnects = 0  # the client's count when the open request was sent
        self._expired = False  # the last request ended quietly: check the consumer before the next
        self._failure = ""
        self._heard = 0.0  # when the open request last delivered anything (a heartbeat included)
        self._woken = asyncio.Event()
        self.consumer_sequence = 0  # of the last entry handed out

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=2 * BATCH + 100, pending_bytes_limit=-1
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self._heard = time.monotonic()
        headers = msg.headers
        if headers and not msg.data and _STATUS in headers:
            status = headers[_STATUS]
            if status == _HEARTBEAT:
                return
            description = headers.get(_DESCRIPTION, "")
            self._open = False
            if status == _EXPIRED:
                self._expired = True
            elif not description.startswith(_REQUEST_ENDED):
                self._failure = f"{status} {description}".strip()
            self._woken.set()
            return
        self._arrived.append(msg)
        self._remaining -= 1
        if self._remaining <= 0:
            self._open = False
        self._woken.set()

    async def _request(self) -> None:
        body = {
            "batch": BATCH,
            "expires": int(EXPIRES * 1e9),
            "max_bytes": max(MAX_BYTES, self._nc.max_payload or 0),
            "idle_heartbeat": int(HEARTBEAT * 1e9),
        }
        self._open = True
        self._heard = time.monotonic()
        self._remaining = BATCH
        self._deadline = time.monotonic() + EXPIRES + 2.0
        self._reconnects = self._nc.stats["reconnects"]
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)

    async def _check(self) -> None:
        """The consumer still exists and delivered nothing we did not see (only called with no request
        open, so nothing can be on its way)."""
        info = await self._js.consumer_info(self._stream, self._consumer, timeout=CHECK_TIMEOUT)
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if delivered != self.consumer_sequence:
            raise FollowBrokenError(
                f"{delivered - self.consumer_sequence} update(s) lost on the way (connection dropped?)"
            )

    async def take(self) -> list[Msg]:
        """Everything that arrived since the last call; waits (pulling as needed) until there is some."""
        while not self._arrived:
            if self._failure:
                raise FollowBrokenError(f"the consumer refused a pull request: {self._failure}")
            if not self._open:
                if self._expired:
                    self._expired = False
                    await self._check()
                await self._request()
            now = time.monotonic()
            wait = self._deadline - now
            if wait <= 0 or now - self._heard > SILENCE or self._nc.stats["reconnects"] != self._reconnects:
                # The request never ended, the server holding it went silent, or the client reconnected
                # since it was sent: it was lost (a restarted bus has also forgotten the consumer).
                self._open = False
                await self._check()
                continue
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, 1.0)):
                    await self._woken.wait()
        taken, self._arrived = self._arrived, []
        return taken


async def _add_consumer(
    js: JetStreamContext, stream: str, config: js_api.ConsumerConfig
) -> js_api.ConsumerInfo:
    """Create the consumer, asking again while a NATS cluster elects the stream's leader (a request sent
    meanwhile is never answered, hence the short timeout)."""
    while True:
        with contextlib.suppress(TimeoutError):  # nats.errors.TimeoutError is one too
            return await js.add_consumer(stream, config, timeout=CHECK_TIMEOUT)


async def _first_load(
    js: JetStreamContext,
    stream: str,
    config: js_api.ConsumerConfig,
    skip: int,
    on_put: OnPut,
    on_delete: OnDelete,
    loaded: asyncio.Event,
) -> js_api.ConsumerInfo:
    """The consumer that loads and follows (``config``), if the stream's leader creates it within
    ``LEADER_WAIT``: the faster load (a direct answer carries six headers, which nats-py parses slowly:
    100,000 keys take about twice as long). Else (an election), the contents from direct gets, and a
    consumer of what follows them, created once there is a leader again."""
    assert config.filter_subject is not None
    while True:
        with contextlib.suppress(TimeoutError):  # nats.errors.TimeoutError is one too
            return await js.add_consumer(stream, config, timeout=LEADER_WAIT)
        direct = _DirectLoad(js._nc, js._prefix, stream, config.filter_subject, skip)
        if await direct.run():
            await direct.apply(on_put, on_delete)
            loaded.set()
            follow = dataclasses.replace(
                config,
                name=_nuid.next().decode(),
                deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=direct.sequence + 1,
            )
            info = await _add_consumer(js, stream, follow)
            with contextlib.suppress(Exception):  # one of the unanswered requests may have landed since
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await js.delete_consumer(stream, config.name or "")
            return info
        # No replica answers either: a bucket without allow_direct, or followers that lost their leader
        # a moment ago. Ask the leader again.


async def follow_bucket(
    js: JetStreamContext,
    bucket: str,
    keys: str,
    on_put: OnPut,
    on_delete: OnDelete,
    loaded: asyncio.Event,
) -> None:
    """Deliver the current entries of ``bucket`` matching ``keys``, set ``loaded``, then every change,
    until cancelled or until ``FollowBrokenError`` (or a bus error) ends it.

    The first load (``loaded`` not yet set) reads any replica (direct gets) when the stream has no leader;
    a later one, after a broken follow, always replays through the consumer, from the stream's leader: during an election a follower lacks
    the writes waiting for the new leader, and its older entries would undo the changes the caller was
    given meanwhile by other means (the directory's pushes) until those writes land.
    """
    stream = f"KV_{bucket}"
    prefix = f"$KV.{bucket}."
    config = js_api.ConsumerConfig(
        name=_nuid.next().decode(),
        deliver_policy=js_api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=js_api.AckPolicy.NONE,
        filter_subject=f"{prefix}{keys}",
        inactive_threshold=INACTIVE_THRESHOLD,
        mem_storage=True,
        num_replicas=1,
    )
    if loaded.is_set():
        info = await js.add_consumer(stream, config, timeout=CHECK_TIMEOUT)  # KVWatcher asks again
    else:
        info = await _first_load(js, stream, config, len(prefix), on_put, on_delete, loaded)
    consumer = info.name or config.name or ""
    pulls = _Pulls(js, js._nc, stream, consumer)
    try:
        await pulls.start()
        if not info.num_pending:
            loaded.set()
        skip = len(prefix)
        while True:
            for msg in await pulls.take():
                sequence, pending = _position(msg.reply)
                if sequence != pulls.consumer_sequence + 1:
                    raise FollowBrokenError(
                        f"updates {pulls.consumer_sequence + 1}..{sequence - 1} lost on the way"
                    )
                pulls.consumer_sequence = sequence
                key = msg.subject[skip:]
                result = on_delete(key) if _is_delete(msg) else on_put(key, msg.data)
                if asyncio.iscoroutine(result):
                    await result
                if not pending and not loaded.is_set():
                    loaded.set()
    finally:
        await pulls.stop()
        with contextlib.suppress(Exception):  # best effort: else the server drops it when inactive
            async with asyncio.timeout(1.0):
                await js.delete_consumer(stream, consumer)
