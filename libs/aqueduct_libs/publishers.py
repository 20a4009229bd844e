"""Every publisher on the bus, declared once: the object a service publishes with is the one the AsyncAPI
document (``tools/asyncapi.py``) describes.

Each function declares a FastStream publisher on a broker (a running one too: the publisher uses the
broker's connection as soon as it is connected) and returns it. A publisher with a stream waits for
JetStream's acknowledgement (``await publisher.publish(...)`` returns the ``PubAck`` or raises);
publishers that must have several messages in flight run their publishes concurrently (``publish_all``).
``Nats-Msg-Id`` goes in ``headers``: JetStream drops a message whose id it holds already (within
``bus.DUPLICATE_WINDOW_SECONDS``), so re-sending after a crash or a lost acknowledgement is harmless.

``tests/test_bus_shape.py`` fails on a publish with nats-py outside the few places it names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from faststream.nats import JStream, NatsBroker
from faststream.nats.publisher.usecase import LogicPublisher

from aqueduct_libs import names
from aqueduct_libs.events import DeadLetter, DirectoryEvent, UsageRecorded

__all__ = [
    "Publisher",
    "dead_letters_publisher",
    "directory_events_publisher",
    "publish_all",
    "snapshot_push_publisher",
    "usage_publisher",
]

Publisher = LogicPublisher


def _declare(
    broker: NatsBroker, subject: str, stream: str | None, schema: Any, title: str, about: str
) -> Publisher:
    """A publisher of ``subject`` (to ``stream``, which the directory creates: ``bus.ensure_topology``)."""
    on_stream = JStream(stream, declare=False) if stream else None
    return broker.publisher(  # type: ignore[return-value]
        subject, stream=on_stream, schema=schema, title=title, description=about
    )


def usage_publisher(
    broker: NatsBroker, service: str = "proxy", by: str = "UsagePublisher", *, grouped: bool = True
) -> Publisher:
    """``grouped``: several events may travel in one message (a JSON array); a lone event is always a bare
    object, so the document's payload is either (as accounting's consumer reads it)."""
    about = f"Usage events ({by}): " + (
        "a JSON array of events, or a bare event when alone; Nats-Msg-Id is the event id of a lone event, "
        "a hash of the event ids of a group."
        if grouped
        else "one bare event to a message; Nats-Msg-Id is its event id."
    )
    title = f"{names.USAGE_SUBJECT} ({service})"
    schema: Any = UsageRecorded | list[UsageRecorded] if grouped else UsageRecorded
    return _declare(broker, names.USAGE_SUBJECT, names.USAGE_STREAM, schema, title, about)


def directory_events_publisher(broker: NatsBroker) -> Publisher:
    about = "Integration events relayed from the directory's outbox (OutboxRelay, a page of messages in "
    about += "flight at once); Nats-Msg-Id is the notification id."
    subject, stream = f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.*", names.DIRECTORY_EVENTS_STREAM
    return _declare(broker, subject, stream, DirectoryEvent, "directory.events.v1.<type>", about)


def snapshot_push_publisher(broker: NatsBroker) -> Publisher:
    about = "A change of the auth snapshot bucket as it is written (SnapshotPusher): the entry's value, an "
    about += "empty payload for a delete."
    return _declare(
        broker, f"{names.SNAPSHOT_PUSH_PREFIX}.>", None, None, "directory.snapshot.v1.<key>", about
    )


def dead_letters_publisher(broker: NatsBroker) -> Publisher:
    about = "A message accounting could not take (DeadLetters), kept for an operator to redrive; "
    about += "Nats-Msg-Id is the subject and the number of tries."
    subject, title = f"{names.DEAD_LETTERS_SUBJECT_PREFIX}.>", "deadletter.v1.<stream>.<key>"
    return _declare(broker, subject, names.DEAD_LETTERS_STREAM, DeadLetter, title, about)


async def publish_all(
    publisher: Publisher, messages: Iterable[tuple[str, bytes, str]], ack_timeout: float
) -> list[Any]:
    """Publish ``(subject, payload, Nats-Msg-Id)`` messages to the publisher's stream, all in flight at once;
    returns, in order, each one's ``PubAck`` or the exception that stopped it."""
    return await asyncio.gather(
        *(
            publisher.publish(payload, subject, headers={"Nats-Msg-Id": message_id}, timeout=ack_timeout)
            for subject, payload, message_id in messages
        ),
        return_exceptions=True,
    )
