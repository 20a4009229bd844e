"""Changes to the auth snapshot, also pushed as plain NATS messages: a new token works at once, even while
a NATS cluster elects a new leader for the snapshot bucket.

The KV bucket stays the source of truth (a proxy loads it at start and follows it). But a write to it
waits for the bucket's stream leader, and on a cluster that lost the node leading it, the other replicas
need 4 to 9 s to elect another. A plain message needs no leader: any surviving node routes it. So the
directory publishes every change it is about to write (``directory.snapshot.v1.<key>``; an empty payload
is a delete), and the proxies apply it as they apply an update of the bucket. Applying a change twice is
harmless; a proxy that missed a push gets the change from the bucket once it is written.

Only the directory may publish these subjects (``aqueduct_cli.nats_users``): they grant access exactly as
the bucket does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from faststream.nats import NatsBroker, NatsMessage
from nats.aio.client import Client as NATS

from aqueduct_libs import names
from aqueduct_libs.broker import subscribe

__all__ = ["SnapshotPusher", "follow_snapshot_pushes"]

log = logging.getLogger(__name__)

OnPut = Callable[[str, bytes], Awaitable[None] | None]
OnDelete = Callable[[str], Awaitable[None] | None]


class SnapshotPusher:
    """The directory's side: ``await push(key, value)`` (``None``: the key is deleted)."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc

    async def __call__(self, key: str, value: bytes | None) -> None:
        if key == names.SNAPSHOT_META_KEY:
            return  # the position of the bucket, meaningful only there
        try:
            await self._nc.publish(names.snapshot_push_subject(key), value or b"")
        except Exception as exc:  # closed or draining connection: the bucket write still carries it
            log.debug("snapshot push of %s not sent (%s)", key, exc)


async def follow_snapshot_pushes(broker: NatsBroker, on_put: OnPut, on_delete: OnDelete) -> None:
    """The proxy's side: a FastStream handler applies every pushed change (on a running broker)."""
    skip = len(names.SNAPSHOT_PUSH_PREFIX) + 1

    async def on_snapshot_pushed(msg: NatsMessage) -> None:  # the raw bytes: applied as the bucket's are
        key, body = msg.raw_message.subject[skip:], msg.body
        try:
            result = on_put(key, body) if body else on_delete(key)
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # a bad push never stops the others; the bucket has the truth
            log.exception("could not apply the pushed snapshot change %s", key)

    await subscribe(broker, f"{names.SNAPSHOT_PUSH_PREFIX}.>", on_snapshot_pushed)
