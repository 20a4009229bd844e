"""NATS plumbing every service shares: connecting, the JetStream topology, and watching a KV bucket.

``ensure_topology`` is idempotent and every service calls it on start, so services can start in any order:
a service whose NATS user may not create a missing stream waits until the directory has created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, NotFoundError

from aqueduct_libs import names
from aqueduct_libs.kvload import follow_bucket

__all__ = [
    "KVWatcher",
    "connect",
    "credentials_of",
    "ensure_kv",
    "ensure_object_store",
    "ensure_stream",
    "ensure_topology",
    "expected_refusal",
    "on_bus_error",
    "patiently",
    "read_bucket",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long JetStream remembers a Nats-Msg-Id for de-duplication of re-published messages.
DUPLICATE_WINDOW_SECONDS = 10 * 60


def _credentials(url: str) -> tuple[str, str] | None:
    """(user, password) of one ``nats://user:password@host:port`` address; a bare token is ``(token, "")``."""
    netloc = urlsplit(url if "://" in url else f"nats://{url}").netloc
    credentials = netloc.rpartition("@")[0]
    if not credentials:
        return None
    user, _, password = credentials.partition(":")
    return unquote(user), unquote(password)


def credentials_of(url: str) -> tuple[str, str] | None:
    """The credentials of whichever address of ``url`` (comma-separated) carries them."""
    return next((c for part in url.split(",") if (c := _credentials(part.strip()))), None)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def servers_of(url: str) -> list[str]:
    """The server addresses of ``AQUEDUCT_NATS_URL`` (comma-separated on a cluster), without credentials."""
    return [_without_credentials(part.strip()) for part in url.split(",") if part.strip()]


def inbox_prefix_of(url: str) -> str:
    """The inbox prefix of the NATS user in ``url`` (``nats://user:password@host:port``); a bare token
    (``nats://token@host``) names no user."""
    found = credentials_of(url)
    return names.inbox_prefix(found[0] if found and found[1] else None)


# What a service without the right to create the shared topology sends while it waits for the directory to
# create it (``_create_or_await``): the server refuses the publish, which is expected, not an error.
_TOPOLOGY_WRITES = ("$js.api.stream.create.", "$js.api.stream.update.")


def expected_refusal(text: str) -> bool:
    """True for the server's refusal of a stream create or update by a user without the right to it."""
    lowered = text.lower()
    return "permissions violation" in lowered and any(s in lowered for s in _TOPOLOGY_WRITES)


async def on_bus_error(error: Exception) -> None:
    """nats-py's asynchronous error callback: one log line, no traceback (a server's ``-ERR`` has none
    worth reading). A refused attempt to create a stream the directory owns is logged at debug level:
    every service tries, and only the directory may (per-service NATS users)."""
    text = str(error)
    if expected_refusal(text):
        log.debug("%s (expected: the directory creates the shared streams; waiting for it)", text)
        return
    log.error("NATS reported an error: %s", text or type(error).__name__)


async def connect(url: str, name: str) -> NATS:
    """Connect and keep reconnecting forever: a service outlives restarts of the bus. Replies arrive
    under the NATS user's own inbox prefix (``names.inbox_prefix``).

    ``url`` may name every node of a cluster, comma-separated. The credentials (of whichever address
    carries them) are given to the client once, not per address, so they also open the nodes the
    cluster announces itself (a node added later, or one missing from the list). The client starts at a
    random node and, when its node dies, moves to a surviving one; a node that does not answer is given
    up after ``connect_timeout`` so a dead address first in the list costs two seconds, not five.
    """
    found = credentials_of(url)
    auth: dict[str, str] = {}
    if found and found[1]:
        auth = {"user": found[0], "password": found[1]}
    elif found:
        auth = {"token": found[0]}
    return await nats.connect(
        servers=servers_of(url),
        name=name,
        inbox_prefix=inbox_prefix_of(url),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        allow_reconnect=True,
        connect_timeout=2,
        # A node that went silent (host down, network cut) is noticed in about 15 s, not nats-py's 4 min.
        ping_interval=5,
        max_outstanding_pings=3,
        error_cb=on_bus_error,
        **auth,
    )


# How long a service waits for a stream it may not create itself (with per-service NATS users only the
# directory creates the shared topology) before giving up.
TOPOLOGY_WAIT_SECONDS = 60.0
# How long one look at a stream may take before it is asked again.
ATTEMPT_SECONDS = 2.0


async def patiently(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``call()``, again while it times out. On a NATS cluster, a stream whose leader died answers nothing
    until its other replicas have elected a new one (4 to 9 s): a service starting meanwhile waits for
    the election instead of failing its start, asking every ``ATTEMPT_SECONDS`` so that it goes on as
    soon as the election is over (a request sent meanwhile is never answered)."""
    deadline = asyncio.get_running_loop().time() + TOPOLOGY_WAIT_SECONDS
    said = False
    while True:
        try:
            return await asyncio.wait_for(call(), ATTEMPT_SECONDS)
        except TimeoutError:  # nats.errors.TimeoutError is one too
            if asyncio.get_running_loop().time() > deadline:
                raise
            if not said:
                log.warning("%s does not answer (a NATS cluster electing its leader?); waiting", what)
                said = True


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


async def _adjust_replicas(
    js: JetStreamContext, info: js_api.StreamInfo, replicas: int, *, allow_direct: bool = False
) -> None:
    """Bring an existing stream to ``replicas`` (NATS moves the data to the new peers on its own), and
    with ``allow_direct`` let every replica answer direct gets (a KV bucket made by an older release).

    Only the stream's owner calls this (its NATS user may update it, see ``aqueduct_cli.nats_users``). A
    refusal is logged, never fatal: the stream still works as it is.
    """
    config = info.config
    has = config.num_replicas or 1
    if has == replicas and (config.allow_direct or not allow_direct):
        return
    if has != replicas:
        log.warning(
            "stream %s has %d replica(s), AQUEDUCT_NATS_REPLICAS asks for %d: changing it",
            config.name,
            has,
            replicas,
        )
    try:
        await js.update_stream(
            dataclasses.replace(
                config, num_replicas=replicas, allow_direct=config.allow_direct or allow_direct
            )
        )
    except Exception as exc:  # not allowed, or not enough servers for that many replicas
        log.error(
            "could not change stream %s to %d replica(s) (%s); it stays as it is", config.name, replicas, exc
        )


async def ensure_stream(
    js: JetStreamContext, config: js_api.StreamConfig, replicas: int | None = None, *, adjust: bool = False
) -> None:
    """Create ``config``'s stream with ``replicas`` (``AQUEDUCT_NATS_REPLICAS``) if it is missing; with
    ``adjust`` (its owner), also bring an existing one to that many replicas."""
    if replicas is not None:
        config = dataclasses.replace(config, num_replicas=replicas)
    name = config.name or ""
    try:
        info = await patiently(lambda: js.stream_info(name), f"the stream {name}")
    except NotFoundError:
        await _create_or_await(js, name, lambda: js.add_stream(config))
        return
    if adjust and config.num_replicas:
        await _adjust_replicas(js, info, config.num_replicas)


# Kept for callers of the earlier private name (every stream still gets the replicas it is given).
_ensure_stream = ensure_stream


async def ensure_kv(
    js: JetStreamContext,
    bucket: str,
    replicas: int = 1,
    *,
    history: int = 1,
    max_age: float | None = None,
    adjust: bool = False,
    direct: bool = False,
) -> None:
    """Create the KV bucket with ``replicas`` if missing; with ``adjust`` also bring an existing one to it.

    ``direct`` (``allow_direct``): every replica, followers included, answers reads, so a ``KVWatcher``
    loads the bucket while a NATS cluster elects its leader (``kvload``). Only for buckets read by
    watches: a direct ``get`` may miss a write its follower has not applied yet (milliseconds behind).
    """
    try:
        await patiently(lambda: js.key_value(bucket), f"the KV bucket {bucket}")
    except BucketNotFoundError:
        await _create_or_await(
            js,
            f"KV_{bucket}",
            lambda: js.create_key_value(
                bucket=bucket,
                history=history,
                ttl=max_age,
                storage=js_api.StorageType.FILE,
                replicas=replicas,
                direct=direct,
            ),
        )
        return
    if adjust:
        info = await patiently(lambda: js.stream_info(f"KV_{bucket}"), f"the KV bucket {bucket}")
        await _adjust_replicas(js, info, replicas, allow_direct=direct)


async def ensure_object_store(
    js: JetStreamContext, store: str, replicas: int = 1, *, adjust: bool = False
) -> None:
    """Create the object store with ``replicas`` if missing; with ``adjust`` also bring an existing one to it."""
    try:
        await patiently(lambda: js.object_store(store), f"the object store {store}")
    except BucketNotFoundError:
        await _create_or_await(
            js,
            f"OBJ_{store}",
            lambda: js.create_object_store(
                store, config=js_api.ObjectStoreConfig(storage=js_api.StorageType.FILE, replicas=replicas)
            ),
        )
        return
    if adjust:
        info = await patiently(lambda: js.stream_info(f"OBJ_{store}"), f"the object store {store}")
        await _adjust_replicas(js, info, replicas)


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


async def ensure_topology(js: JetStreamContext, replicas: int = 1, *, adjust: bool = False) -> None:
    """Every shared stream and KV bucket, created with ``replicas`` (``AQUEDUCT_NATS_REPLICAS``: 3 on a
    three-node cluster) if missing. The directory, which owns the topology, passes ``adjust`` to bring
    existing ones to that many replicas too (a single server that became a cluster)."""
    for name, subjects in EVENT_STREAMS:
        await ensure_stream(
            js,
            js_api.StreamConfig(
                name=name,
                subjects=[subjects],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            ),
            replicas,
            adjust=adjust,
        )
    for name, subjects in LAST_PER_SUBJECT_STREAMS:
        await ensure_stream(
            js,
            js_api.StreamConfig(
                name=name,
                subjects=[subjects],
                storage=js_api.StorageType.FILE,
                retention=js_api.RetentionPolicy.LIMITS,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                max_msgs_per_subject=1,
            ),
            replicas,
            adjust=adjust,
        )
    # The buckets every service watches (KVWatcher): readable from any replica, so a service starting
    # while a NATS cluster elects their leader loads them at once.
    for bucket in (names.AUTH_SNAPSHOT_BUCKET, names.QUOTA_BUCKET, names.AUTH_KEYS_BUCKET):
        await ensure_kv(js, bucket, replicas, adjust=adjust, direct=True)
    await ensure_kv(
        js,
        names.AUTH_REVOKED_BUCKET,
        replicas,
        max_age=names.AUTH_REVOKED_MAX_AGE_SECONDS,
        adjust=adjust,
        direct=True,
    )
    await ensure_kv(
        js, names.AUTH_ATTEMPTS_BUCKET, replicas, max_age=names.AUTH_ATTEMPTS_MAX_AGE_SECONDS, adjust=adjust
    )


OnPut = Callable[[str, bytes], Awaitable[None] | None]
OnDelete = Callable[[str], Awaitable[None] | None]


READ_SECONDS = 30.0  # a bucket read that takes longer fails (TimeoutError)


async def read_bucket(js: JetStreamContext, bucket: str, keys: str = ">") -> dict[str, bytes]:
    """The current value of every key of ``bucket`` matching ``keys`` (deleted keys left out), read once
    by the one KV reader (``kvload.follow_bucket``): every key written before the call is in it."""
    contents: dict[str, bytes] = {}

    def put(key: str, value: bytes) -> None:
        contents[key] = value

    def delete(key: str) -> None:
        contents.pop(key, None)

    loaded = asyncio.Event()
    follow = asyncio.create_task(follow_bucket(js, bucket, keys, put, delete, loaded))
    waiting = asyncio.create_task(loaded.wait())
    try:
        async with asyncio.timeout(READ_SECONDS):
            await asyncio.wait({follow, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if follow.done():
            follow.result()  # the follow ended before the contents were loaded: its error
        return dict(contents)
    finally:
        for task in (waiting, follow):
            task.cancel()
        await asyncio.gather(waiting, follow, return_exceptions=True)


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
                await asyncio.sleep(0.5)

    async def _watch_once(self) -> None:
        await follow_bucket(self._js, self._bucket, self._keys, self._on_put, self._on_delete, self.ready)
