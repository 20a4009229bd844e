"""What the proxy and the batch worker do on the bus, for the AsyncAPI document (``tools/asyncapi.py``)."""

from __future__ import annotations

from faststream.nats import NatsBroker

from aqueduct_libs.broker import new_broker
from aqueduct_libs.publishers import usage_publisher
from aqueduct_libs.snapshot_push import snapshot_pushes
from aqueduct_proxy.batches.store import batch_lines_publisher
from aqueduct_proxy.batches.worker import BatchWorker, subscribe_lines

__all__ = ["batch_worker_broker", "proxy_broker"]


def _ignore(*_: object) -> None:
    return None


def proxy_broker() -> NatsBroker:
    """The proxy's broker with its handlers and publishers, never started."""
    broker = new_broker(None, "aqueduct-proxy", description="aqueduct-proxy: the OpenAI-compatible gateway")
    snapshot_pushes(broker, _ignore, _ignore)
    usage_publisher(broker)  # UsagePublisher, one per proxy process
    batch_lines_publisher(broker)  # BatchStore.enqueue
    return broker


def batch_worker_broker() -> NatsBroker:
    """The batch worker's broker with its handlers and publishers, never started."""
    broker = new_broker(None, "aqueduct-batch-worker", description="aqueduct-batch-worker: runs batch lines")
    subscribe_lines(broker, concurrency=1)
    BatchWorker.declare_publishers(broker)
    return broker
