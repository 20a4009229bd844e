"""What the proxy and the batch worker do on the bus, for the AsyncAPI document (``tools/asyncapi.py``)."""

from __future__ import annotations

from faststream.nats import JStream, NatsBroker

from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.events import UsageRecorded
from aqueduct_libs.snapshot_push import snapshot_pushes
from aqueduct_proxy.batches.domain import BatchLine
from aqueduct_proxy.batches.worker import subscribe_lines

__all__ = ["batch_worker_broker", "proxy_broker"]


def _ignore(*_: object) -> None:
    return None


def _usage(broker: NatsBroker, service: str, by: str) -> None:
    broker.publisher(
        names.USAGE_SUBJECT,
        stream=JStream(names.USAGE_STREAM, declare=False),
        schema=list[UsageRecorded],
        title=f"{names.USAGE_SUBJECT} ({service})",
        description=f"Usage events ({by}): a JSON array of events, or a bare event when alone; "
        "Nats-Msg-Id is derived from the event ids. Published with nats-py and a reply inbox, several "
        "messages in flight, their acknowledgements received by a FastStream handler.",
    )


def proxy_broker() -> NatsBroker:
    """The proxy's broker with its handlers and publishers, never started."""
    broker = new_broker(None, "aqueduct-proxy", description="aqueduct-proxy: the OpenAI-compatible gateway")
    snapshot_pushes(broker, _ignore, _ignore)
    _usage(broker, "proxy", "UsagePublisher, one per proxy process")
    broker.publisher(
        f"{names.BATCH_LINES_SUBJECT_PREFIX}.*",
        stream=JStream(names.BATCH_LINES_STREAM, declare=False),
        schema=BatchLine,
        title="batch.lines.<batch id>",
        description="One queued line of a batch (BatchStore), for the batch workers.",
    )
    return broker


def batch_worker_broker() -> NatsBroker:
    """The batch worker's broker with its handlers and publishers, never started."""
    broker = new_broker(None, "aqueduct-batch-worker", description="aqueduct-batch-worker: runs batch lines")
    subscribe_lines(broker, concurrency=1)
    _usage(broker, "batch worker", "one per line, after its result is stored")
    return broker
