"""What the directory does on the bus, for the AsyncAPI document (``tools/asyncapi.py``)."""

from __future__ import annotations

from faststream.nats import NatsBroker

from aqueduct_directory.entrypoints.rpc import sign_in_router
from aqueduct_libs.broker import new_broker
from aqueduct_libs.publishers import directory_events_publisher, snapshot_push_publisher

__all__ = ["directory_broker"]


def directory_broker() -> NatsBroker:
    """The directory's broker with its handlers and publishers, never started."""
    broker = new_broker(
        None,
        "aqueduct-directory",
        (sign_in_router(),),
        description="aqueduct-directory: users, teams, tokens",
    )
    directory_events_publisher(broker)  # OutboxRelay
    snapshot_push_publisher(broker)  # SnapshotPusher
    return broker
