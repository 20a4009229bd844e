"""Batch records (KV), the work queue of their lines (a WorkQueue-retention JetStream stream), and
line results (KV, written before a line is acknowledged)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable

from faststream.nats import JStream, NatsBroker
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import (
    InvalidKeyError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from aqueduct_libs import names
from aqueduct_libs.bus import DUPLICATE_WINDOW_SECONDS, ensure_kv, ensure_stream, read_bucket
from aqueduct_libs.publishers import Publisher
from aqueduct_proxy.batches.domain import Batch, BatchLine, BatchNotFoundError, LineResult
from aqueduct_proxy.domain.errors import StoreUnavailableError

__all__ = ["BatchStore", "batch_lines_publisher"]

_PUBLISH_CONCURRENCY = 256
_ACK_TIMEOUT = 5.0  # nats-py's own default for a JetStream publish
_NOT_OPEN = "The batches store is not available yet; try again in a few seconds."


def batch_lines_publisher(broker: NatsBroker) -> Publisher:
    """The work queue's publisher (``BatchStore.enqueue``), also what the AsyncAPI document shows."""
    return broker.publisher(  # type: ignore[return-value]
        f"{names.BATCH_LINES_SUBJECT_PREFIX}.*",
        stream=JStream(names.BATCH_LINES_STREAM, declare=False),
        schema=BatchLine,
        title="batch.lines.<batch id>",
        description="One queued line of a batch (BatchStore), for the batch workers; Nats-Msg-Id is the "
        "batch id and the line number.",
    )


class BatchStore:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        lines: Publisher | None = None,
        replicas: int = 1,
        results_max_age_days: int = 30,
    ) -> None:
        """``lines``: the broker's ``batch_lines_publisher``, for a store that enqueues lines."""
        self.js = js
        self._lines = lines
        self._replicas = replicas
        self._results_max_age = results_max_age_days * 86400
        self._batches: KeyValue | None = None
        self._results: KeyValue | None = None

    async def start(self) -> None:
        """Create the buckets and the work queue if missing (the proxy and the worker may start first)."""
        # The proxy and the batch worker own these: they also bring existing ones to ``replicas``.
        self._batches = await self._kv(names.BATCHES_BUCKET, ttl=None)
        self._results = await self._kv(names.BATCH_RESULTS_BUCKET, ttl=self._results_max_age)
        await ensure_stream(
            self.js,
            js_api.StreamConfig(
                name=names.BATCH_LINES_STREAM,
                subjects=[f"{names.BATCH_LINES_SUBJECT_PREFIX}.>"],
                retention=js_api.RetentionPolicy.WORK_QUEUE,
                storage=js_api.StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            ),
            self._replicas,
            adjust=True,
        )

    async def _kv(self, bucket: str, ttl: float | None) -> KeyValue:
        await ensure_kv(self.js, bucket, self._replicas, max_age=ttl, adjust=True)
        return await self.js.key_value(bucket)

    @property
    def batches(self) -> KeyValue:
        if self._batches is None:
            raise StoreUnavailableError(_NOT_OPEN)
        return self._batches

    @property
    def results(self) -> KeyValue:
        if self._results is None:
            raise StoreUnavailableError(_NOT_OPEN)
        return self._results

    # -- batch records ---------------------------------------------------------------------------------

    @staticmethod
    def key(owner: str, batch_id: str) -> str:
        return f"{names.kv_safe(owner)}.{batch_id}"

    async def create(self, batch: Batch) -> None:
        await self.batches.create(self.key(batch.owner, batch.id), batch.model_dump_json().encode())

    async def get(self, owner: str, batch_id: str) -> Batch:
        return (await self._get(owner, batch_id))[0]

    async def _get(self, owner: str, batch_id: str) -> tuple[Batch, int]:
        try:
            entry = await self.batches.get(self.key(owner, batch_id))
        except (KeyNotFoundError, InvalidKeyError, ValueError):
            # An id that cannot even be a key names no batch either (a 404, not a 500).
            raise BatchNotFoundError(f"No such batch: {batch_id}", param="batch_id") from None
        return Batch.model_validate_json(entry.value or b""), entry.revision or 0

    async def list(self, owner: str) -> list[Batch]:
        if self._batches is None:  # read through the bus's one KV reader, once the store is open
            raise StoreUnavailableError(_NOT_OPEN)
        return [
            Batch.model_validate_json(value)
            for value in (
                await read_bucket(self.js, names.BATCHES_BUCKET, f"{names.kv_safe(owner)}.>")
            ).values()
        ]

    async def mutate(self, owner: str, batch_id: str, change: Callable[[Batch], Batch | None]) -> Batch:
        """Apply ``change`` with compare-and-set, retrying on a concurrent write; None leaves it as is."""
        while True:
            batch, revision = await self._get(owner, batch_id)
            updated = change(batch)
            if updated is None:
                return batch
            try:
                await self.batches.update(
                    self.key(owner, batch_id), updated.model_dump_json().encode(), revision
                )
                return updated
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.005)

    # -- the work queue --------------------------------------------------------------------------------

    async def enqueue(self, lines: builtins.list[BatchLine]) -> None:
        """One message per line; the message id makes a repeated enqueue of the same line a no-op."""
        publisher = self._lines
        if publisher is None:
            raise RuntimeError("this batch store was opened without the publisher of batch lines")
        gate = asyncio.Semaphore(_PUBLISH_CONCURRENCY)

        async def one(line: BatchLine) -> None:
            async with gate:
                await publisher.publish(
                    line.model_dump_json().encode(),
                    names.batch_lines_subject(line.batch_id),
                    headers={"Nats-Msg-Id": f"{line.batch_id}:{line.line}"},
                    timeout=_ACK_TIMEOUT,
                )

        await asyncio.gather(*(one(line) for line in lines))

    async def remaining(self, batch_id: str) -> int:
        """Lines of the batch still in the queue (delivered but not yet acknowledged ones included)."""
        subject = names.batch_lines_subject(batch_id)
        info = await self.js.stream_info(names.BATCH_LINES_STREAM, subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))

    async def drop_queued(self, batch_id: str) -> None:
        await self.js.purge_stream(names.BATCH_LINES_STREAM, subject=names.batch_lines_subject(batch_id))

    # -- line results ----------------------------------------------------------------------------------

    @staticmethod
    def result_key(batch_id: str, line: int) -> str:
        return f"{batch_id}.{line}"

    async def result(self, batch_id: str, line: int) -> LineResult | None:
        try:
            entry = await self.results.get(self.result_key(batch_id, line))
        except KeyNotFoundError:
            return None
        return LineResult.model_validate_json(entry.value or b"")

    async def store_result(self, batch_id: str, result: LineResult) -> LineResult:
        """Write once: if another delivery of the line stored first, theirs stands and is returned."""
        try:
            await self.results.create(
                self.result_key(batch_id, result.line), result.model_dump_json().encode()
            )
            return result
        except KeyWrongLastSequenceError:
            existing = await self.result(batch_id, result.line)
            assert existing is not None
            return existing

    async def all_results(self, batch_id: str) -> builtins.list[LineResult]:
        if self._results is None:
            raise StoreUnavailableError(_NOT_OPEN)
        return [
            LineResult.model_validate_json(value)
            for value in (await read_bucket(self.js, names.BATCH_RESULTS_BUCKET, f"{batch_id}.*")).values()
        ]
