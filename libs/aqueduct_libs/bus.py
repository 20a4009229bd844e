"""NATS plumbing every service shares: connecting, the JetStream topology, and watching a KV bucket.

``ensure_topology`` is idempotent and every service calls it on start, so services can start in any order:
a service whose NATS user may not create a missing stream waits until the directory has created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, NotFoundError

from aqueduct_libs import names
from aqueduct_libs.kvload import follow_bucket

__all__ = ["KVWatcher", "connect", "ensure_topology"]

log = logging.getLogger(__name__)

# How long JetStream remembers a Nats-Msg-Id for de-duplication of re-published messages.
DUPLICATE_WINDOW_SECONDS = 10 * 60


def inbox_prefix_of(url: str) -> str:
    """The inbox prefix of the NATS user in ``url`` (``nats://user:password@host:port``); a bare token
    (``nats://token@host``) names no user."""
    credentials = urlsplit(url.split(",")[0].strip()).netloc.rpartition("@")[0]
    user, colon, _ = credentials.partition(":")
    return names.inbox_prefix(unquote(user) if user and colon else None)


async def connect(url: str, name: str) -> NATS:
    """Connect and keep reconnecting forever: a service outlives restarts of the bus. Replies arrive
    under the NATS user's own inbox prefix (``names.inbox_prefix``)."""
    return await nats.connect(
        servers=url.split(","),
        name=name,
        inbox_prefix=inbox_prefix_of(url),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        connect_timeout=5,
    )


# How long a service waits for a stream it may not create itself (with per-service NATS users only the
# directory creates the shared topology) before giving up.
TOPOLOGY_WAIT_SECONDS = 60.0


async def _exists(js: JetStreamContext, stream: str) -> bool:
    try:
        await js.stream_info(stream)
    except NotFoundError:
        return False
    return True


async def _create_or_await(
    js: JetStreamContext, stream: str, create: Callable[[], Awaitable[object]]
) -> None:
    """Create a missing stream, or wait until its owner has.

    A NATS user without permission to create it gets no answer (the server refuses the request and the
    call times out), so while the create is pending we keep looking whether another service (the
    directory) has created it, and stop as soon as it exists.
    """
    creating = asyncio.ensure_future(create())
    deadline = asyncio.get_running_loop().time() + TOPOLOGY_WAIT_SECONDS
    waiting = False
    try:
        while True:
            await asyncio.wait({creating}, timeout=0.25)
            if creating.done():
                error = creating.exception()
                if error is None:
                    return
                if not isinstance(error, nats.errors.TimeoutError) and not await _exists(js, stream):
                    raise error  # a real refusal (bad configuration), not a race nor a missing permission
            if await _exists(js, stream):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"the JetStream stream {stream} does not exist and this NATS user may not create it; "
                    f"the directory creates it when it starts (waited {TOPOLOGY_WAIT_SECONDS:.0f}s)"
                )
            if creating.done():
                if not waiting:
                    log.info("waiting for the stream %s: this NATS user may not create it", stream)
                    waiting = True
                await asyncio.sleep(0.25)
    finally:
        creating.cancel()


async def _ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> None:
    if not await _exists(js, config.name or ""):
        await _create_or_await(js, config.name or "", lambda: js.add_stream(config))


async def _ensure_kv(
    js: JetStreamContext,
    bucket: str,
    history: int = 1,
    max_age: float | None = None,
) -> None:
    try:
        await js.key_value(bucket)
    except BucketNotFoundError:
        await _create_or_await(
            js,
            f"KV_{bucket}",
            lambda: js.create_key_value(
                bucket=bucket, history=history, ttl=max_age, storage=js_api.StorageType.FILE
            ),
        )


# The event streams every service relies on: (name, subject filter). All keep events (limits retention).
EVENT_STREAMS: tuple[tuple[str, str], ...] = (
    (names.DIRECTORY_EVENTS_STREAM, f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.>"),
    (names.USAGE_STREAM, "usage.v1.>"),
    (names.AUTH_EVENTS_STREAM, f"{names.AUTH_EVENTS_SUBJECT_PREFIX}.>"),
)
# Streams of which only the last message of each subject is kept: (name, subject filter).
LAST_PER_SUBJECT_STREAMS: tuple[tuple[str, str], ...] = (
    (names.DEAD_LETTERS_STREAM, f"{names.DEAD_LETTERS_SUBJECT_PREFIX}.>"),
)


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> None:
    for name, subjects in EVENT_STREAMS:
        await _ensure_stream(
            js,
            js_api.StreamConfig(
                name=name,
                subjects=[subjects],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                num_replicas=replicas,
            ),
        )
    for name, subjects in LAST_PER_SUBJECT_STREAMS:
        await _ensure_stream(
            js,
            js_api.StreamConfig(
                name=name,
                subjects=[subjects],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                max_msgs_per_subject=1,
                num_replicas=replicas,
            ),
        )
    for bucket in (names.AUTH_SNAPSHOT_BUCKET, names.QUOTA_BUCKET, names.AUTH_KEYS_BUCKET):
        await _ensure_kv(js, bucket)
    await _ensure_kv(js, names.AUTH_REVOKED_BUCKET, max_age=names.AUTH_REVOKED_MAX_AGE_SECONDS)
    await _ensure_kv(js, names.AUTH_ATTEMPTS_BUCKET, max_age=names.AUTH_ATTEMPTS_MAX_AGE_SECONDS)


OnPut = Callable[[str, bytes], Awaitable[None] | None]
OnDelete = Callable[[str], Awaitable[None] | None]


class KVWatcher:
    """Mirrors a KV bucket into callbacks, and survives the bus going away.

    ``ready`` is set once the initial contents have been delivered. If the watch breaks (bus restart,
    consumer gone), it is re-established and the whole bucket replayed; callers treat puts as upserts,
    so a replay is harmless. While the bus is down the caller keeps its last good state.
    ``keys`` narrows the watch to matching keys (a NATS subject filter such as ``"user.>"``).
    """

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        on_put: OnPut,
        on_delete: OnDelete,
        keys: str = ">",
    ) -> None:
        self._js = js
        self._bucket = bucket
        self._keys = keys
        self._on_put = on_put
        self._on_delete = on_delete
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kv-watch-{self._bucket}")

    async def stop(self) -> None:
        if self._task:
            # Python 3.11's wait_for (inside nats-py's watcher.updates) drops a cancellation that arrives
            # as an update does, which is likely while the initial contents stream in: ask until it ends.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self._watch_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus is down or the consumer vanished: retry, keep state
                log.warning("watch of KV bucket %s broke (%s); retrying", self._bucket, exc)
                await asyncio.sleep(1.0)

    async def _watch_once(self) -> None:
        await follow_bucket(self._js, self._bucket, self._keys, self._on_put, self._on_delete, self.ready)
