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
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from faststream.nats.broker.registrator import NatsRegistrator
from faststream.nats.subscriber.usecases.basic import LogicSubscriber

from aqueduct_libs import names
from aqueduct_libs.publishers import snapshot_push_publisher

__all__ = ["SnapshotPusher", "follow_snapshot_pushes", "snapshot_pushes"]

log = logging.getLogger(__name__)

OnPut = Callable[[str, bytes], Awaitable[None] | None]
OnDelete = Callable[[str], Awaitable[None] | None]


class SnapshotPusher:
    """The directory's side: ``await push(key, value)`` (``None``: the key is deleted), through the FastStream
    publisher it declares on the directory's broker (``aqueduct_libs.publishers``)."""

    def __init__(self, broker: NatsBroker) -> None:
        self._publisher = snapshot_push_publisher(broker)

    async def __call__(self, key: str, value: bytes | None) -> None:
        if key == names.SNAPSHOT_META_KEY:
            return  # the position of the bucket, meaningful only there
        try:
            await self._publisher.publish(value or b"", names.snapshot_push_subject(key))
        except Exception as exc:  # closed or draining connection: the bucket write still carries it
            log.debug("snapshot push of %s not sent (%s)", key, exc)


def snapshot_pushes(
    broker: NatsRegistrator, on_put: OnPut, on_delete: OnDelete, *, persistent: bool = True
) -> LogicSubscriber[Any]:
    """The proxy's side: a FastStream handler that applies every pushed change (registered, not started)."""
    skip = len(names.SNAPSHOT_PUSH_PREFIX) + 1

    async def on_snapshot_pushed(msg: NatsMessage) -> None:  # the raw bytes: applied as the bucket's are
        key, body = msg.raw_message.subject[skip:], msg.body
        try:
            result = on_put(key, body) if body else on_delete(key)
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # a bad push never stops the others; the bucket has the truth
            log.exception("could not apply the pushed snapshot change %s", key)

    subscriber = broker.subscriber(
        f"{names.SNAPSHOT_PUSH_PREFIX}.>",
        persistent=persistent,
        title="directory.snapshot.v1 (auth snapshot changes)",
        description="A change of the auth snapshot bucket, pushed as it is written: the key after the "
        "prefix, the entry's value as the payload, an empty payload for a delete.",
    )
    subscriber(on_snapshot_pushed)
    return subscriber  # type: ignore[return-value]


async def follow_snapshot_pushes(broker: NatsBroker, on_put: OnPut, on_delete: OnDelete) -> None:
    """Apply every pushed change, from now on (on a running broker)."""
    await snapshot_pushes(broker, on_put, on_delete, persistent=False).start()
