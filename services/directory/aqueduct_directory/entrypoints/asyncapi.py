"""What the directory does on the bus, for the AsyncAPI document (``tools/asyncapi.py``)."""

from __future__ import annotations

from faststream.nats import JStream, NatsBroker

from aqueduct_directory.entrypoints.rpc import sign_in_router
from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.events import DirectoryEvent

__all__ = ["directory_broker"]


def directory_broker() -> NatsBroker:
    """The directory's broker with its handlers and publishers, never started."""
    broker = new_broker(
        None,
        "aqueduct-directory",
        (sign_in_router(),),
        description="aqueduct-directory: users, teams, tokens",
    )
    broker.publisher(
        f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.*",
        stream=JStream(names.DIRECTORY_EVENTS_STREAM, declare=False),
        schema=DirectoryEvent,
        title="directory.events.v1.<type>",
        description="Integration events relayed from the directory's outbox (OutboxRelay, pipelined with "
        "nats-py's publish_async); Nats-Msg-Id is the notification id.",
    )
    broker.publisher(
        f"{names.SNAPSHOT_PUSH_PREFIX}.>",
        title="directory.snapshot.v1.<key>",
        description="A change of the auth snapshot bucket as it is written (SnapshotPusher): the entry's "
        "value, an empty payload for a delete.",
    )
    return broker
