"""Costs that do not depend on the rate: one store per interval for a steady stream (the first events after
a quiet spell at once), and a duplicate check that answers from memory for recent events, from a bounded
query for older ones, exactly across restarts and failed inserts."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from accounting_testing import usage_event, wait_until

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, QueryResult, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.recent_ids import RecentIds
from aqueduct_accounting.domain.usage import usage_row, usage_rows_from_json
from aqueduct_accounting.entrypoints.stream_consumer import BatchConsumer, broker_on
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology


def test_recent_ids_answer_for_their_window_only() -> None:
    recent = RecentIds(max_ids=5)
    recent.start(
        "2026-03-01 10:00:00", [("a", "2026-03-01 10:00:00.250"), ("old", "2026-03-01 09:59:59.999")]
    )
    assert recent.covers("2026-03-01 10:00:00.000") and not recent.covers("2026-03-01 09:59:59.999")
    assert recent.contains("a", "2026-03-01 10:00:00.250")
    assert not recent.contains("old", "2026-03-01 09:59:59.999") and len(recent) == 1
    recent.add(
        [("b", "2026-03-01 10:00:05.000"), ("b", "2026-03-01 10:00:05.000"), ("c", "2026-03-01 10:00:06.000")]
    )
    assert len(recent) == 3
    recent.advance("2026-03-01 10:00:05.500")  # the second 10:00:05 stays whole
    assert recent.horizon == "2026-03-01 10:00:05" and len(recent) == 2
    recent.advance("2026-03-01 09:00:00")  # a clock stepping back changes nothing
    assert recent.horizon == "2026-03-01 10:00:05"
    # Over max_ids: the oldest seconds go, and the horizon moves past them.
    recent.add([(f"x{i}", "2026-03-01 10:00:07.000") for i in range(4)])
    assert len(recent) == 5 and recent.horizon == "2026-03-01 10:00:06"
    assert not recent.covers("2026-03-01 10:00:05.000") and recent.contains("c", "2026-03-01 10:00:06.000")


class CountingEngine:
    """chDB, counting the statements that reach it; ``fail_after_insert`` raises once after an insert
    landed (an insert that timed out on its way back, as a server's can)."""

    def __init__(self, engine: ClickHouse) -> None:
        self.engine = engine
        self.queries: list[str] = []
        self.fail_after_insert = False

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.engine.execute(sql, params)

    def query(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        self.queries.append(sql)
        return self.engine.query(sql, params, settings)

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str = "") -> None:
        self.engine.insert_json_rows(table, rows, dedup_token)
        if self.fail_after_insert:
            self.fail_after_insert = False
            raise TimeoutError("the answer to the insert was lost")

    def close(self) -> None:
        self.engine.close()


def _consumer(nc: Any, durable: str, store: Any, **intervals: Any) -> BatchConsumer[list[dict[str, Any]]]:
    """A usage consumer reading rows, storing with ``store``, with the given store intervals."""
    return BatchConsumer(
        broker_on(nc),
        stream=names.USAGE_STREAM,
        subject=names.USAGE_SUBJECT,
        durable=durable,
        decode=usage_rows_from_json,
        store=store,
        batch_size=20_000,
        flush_interval=1.0,
        max_ack_pending=50_000,
        ack_wait=30,
        **intervals,
    )


def _recording(stores: list[tuple[float, int]]) -> Callable[[list[list[dict[str, Any]]]], Awaitable[None]]:
    """A store that notes when it ran and how many events it got."""

    async def store(items: list[list[dict[str, Any]]]) -> None:
        stores.append((time.monotonic(), sum(len(rows) for rows in items)))

    return store


def _rows(*events: Any) -> list[dict[str, Any]]:
    return [usage_row(event) for event in events]


def _counts(engine: ClickHouse) -> list[list[Any]]:
    return engine.query("SELECT event_id, count() FROM usage_events GROUP BY event_id ORDER BY event_id").rows


@pytest.mark.chdb
async def test_duplicates_are_found_in_memory_for_recent_events_and_by_query_for_old_ones(
    tmp_path: Path,
) -> None:
    chdb = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    apply_migrations(chdb, default_migrations_dir())
    engine = CountingEngine(chdb)
    try:
        ingest = UsageIngest(AsyncClickHouse(engine), PriceBook({}), window_seconds=60)
        now = datetime.now(UTC)
        fresh = [usage_event(i, event_id=f"new-{i}", occurred_at=now) for i in range(3)]
        assert (await ingest.ingest_rows(_rows(*fresh))).inserted == 3
        # The start: one query for where the store clock starts (roll-ups), one loading the recent ids.
        loads = len(engine.queries)
        assert loads == 2

        # A recent event again (a redelivery): dropped without asking the table.
        result = await ingest.ingest_rows(_rows(fresh[0], usage_event(9, event_id="new-9", occurred_at=now)))
        assert (result.inserted, result.duplicates) == (1, 1)
        assert len(engine.queries) == loads

        # An old event (a backlog, a journal sent again much later) is checked against the table.
        old = usage_event(7, event_id="old-7", occurred_at=now - timedelta(hours=3))
        assert (await ingest.ingest_rows(_rows(old))).inserted == 1
        assert (await ingest.ingest_rows(_rows(old))).duplicates == 1
        assert len(engine.queries) == loads + 2

        # A new process (after a crash between insert and ack) loads the recent ids and drops the redelivery.
        again = UsageIngest(AsyncClickHouse(engine), PriceBook({}), window_seconds=60)
        result = await again.ingest_rows(_rows(*fresh, usage_event(10, event_id="new-10", occurred_at=now)))
        assert (result.inserted, result.duplicates) == (1, 3)

        # An insert that raised after it landed: the retry of the same events is checked against the table.
        engine.fail_after_insert = True
        landed = _rows(usage_event(11, event_id="new-11", occurred_at=now))
        with pytest.raises(TimeoutError):
            await again.ingest_rows(landed)
        before = len(engine.queries)
        result = await again.ingest_rows(_rows(usage_event(11, event_id="new-11", occurred_at=now)))
        assert (result.inserted, result.duplicates) == (0, 1) and len(engine.queries) == before + 1
        # ... and then it is known in memory.
        assert (await again.ingest_rows(landed)).duplicates == 1 and len(engine.queries) == before + 1

        stored = _counts(chdb)
        assert all(count == 1 for _, count in stored)
        assert [event_id for event_id, _ in stored] == sorted(
            ["new-0", "new-1", "new-2", "new-9", "old-7", "new-10", "new-11"]
        )
        assert chdb.query("SELECT sum(requests) FROM usage_by_minute").rows == [[7]]
        # Small parts are written packed (one file each): migration 0007.
        kinds = chdb.query(
            "SELECT DISTINCT part_storage_type FROM system.parts WHERE table = 'usage_events' AND active"
        ).rows
        assert kinds == [["Packed"]]
    finally:
        engine.close()


@pytest.mark.nats
async def test_a_steady_stream_is_stored_once_per_interval_and_a_lone_event_at_once(tmp_path: Path) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    stores: list[tuple[float, int]] = []

    async def store(items: list[list[dict[str, Any]]]) -> None:
        stores.append((time.monotonic(), sum(len(rows) for rows in items)))

    consumer = _consumer(nc, "batching-test", store, store_interval=1.0)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        await consumer.start()
        await asyncio.wait_for(consumer.running.wait(), 10)

        sent = time.monotonic()
        await js.publish(names.USAGE_SUBJECT, usage_event(0, event_id="lone").model_dump_json().encode())
        while not stores:
            assert time.monotonic() - sent < 1.0, "a lone event after a quiet spell waits for the interval"
            await asyncio.sleep(0.01)

        # About 200 events per second for 3.5 seconds, 2 to a message every 10 ms.
        await asyncio.sleep(1.2)
        stores.clear()
        started = time.monotonic()
        for tick in range(350):
            events = [usage_event(i, event_id=f"s-{tick}-{i}") for i in range(2)]
            payload = b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
            await nc.publish(names.USAGE_SUBJECT, payload)
            await asyncio.sleep(max(0.0, started + (tick + 1) * 0.01 - time.monotonic()))
        await wait_until(lambda: sum(n for _, n in stores) >= 700, within=10, interval=0.05)
        assert sum(n for _, n in stores) == 700
        # A loaded machine stretches the stream; the count of stores follows its length, not its rate.
        span = stores[-1][0] - started
        assert len(stores) <= span + 2, stores
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(stores)]
        assert all(gap >= 0.9 for gap in gaps), gaps
    finally:
        await consumer.stop()
        await nc.close()
        bus.stop()


@pytest.mark.nats
async def test_a_busy_stream_is_stored_at_the_busy_interval(tmp_path: Path) -> None:
    """Stores of less than ``busy_store_bytes`` come ``store_interval`` apart; once a store holds more, the
    next comes ``busy_store_interval`` after it."""
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    stores: list[tuple[float, int]] = []

    async def store(items: list[list[dict[str, Any]]]) -> None:
        stores.append((time.monotonic(), sum(len(rows) for rows in items)))

    consumer = _consumer(
        nc, "busy-test", store, store_interval=1.5, busy_store_interval=0.5, busy_store_bytes=30_000
    )

    async def stream(per_second: int, seconds: float, tag: str) -> float:
        started = time.monotonic()
        for tick in range(int(per_second * seconds)):
            events = [usage_event(i, event_id=f"{tag}-{tick}-{i}") for i in range(2)]
            await nc.publish(
                names.USAGE_SUBJECT, b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
            )
            await asyncio.sleep(max(0.0, started + (tick + 1) / per_second - time.monotonic()))
        return time.monotonic()

    try:
        await ensure_topology(nc.jetstream())
        await consumer.start()
        await asyncio.wait_for(consumer.running.wait(), 10)
        # A trickle: 10 messages (about 9 kB) a second, so 1.5 s hold about 14 kB.
        await stream(10, 5.0, "slow")
        slow = [when for when, _ in stores]
        slow_gaps = [b - a for a, b in itertools.pairwise(slow[1:])]  # the first after the quiet spell
        assert slow_gaps and all(gap >= 1.4 for gap in slow_gaps), slow_gaps
        # Busy: 100 messages (about 90 kB) a second, so even 0.5 s hold more than 30 kB.
        first_busy = len(stores)
        await stream(100, 4.0, "busy")
        busy = [when for when, _ in stores[first_busy + 1 :]]
        busy_gaps = [b - a for a, b in itertools.pairwise(busy)]
        assert len([gap for gap in busy_gaps if gap <= 0.8]) >= 3, busy_gaps
    finally:
        await consumer.stop()
        await nc.close()
        bus.stop()


@pytest.mark.nats
async def test_a_backlog_is_stored_as_fast_as_it_is_read_to_its_last_part(tmp_path: Path) -> None:
    """A backlog fills batch after batch; its last part, less than a batch, is stored as soon as the
    stream is drained, not ``busy_store_interval`` after the last full batch (bulk ingest waited there)."""
    stores: list[tuple[float, int]] = []
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    consumer = _consumer(
        nc,
        "backlog-test",
        _recording(stores),
        batch_bytes=1_000_000,  # a pull brings up to 1 MB (the server's max_payload): about 18 messages
        store_interval=1.0,
        handover_interval=1.0,
        busy_store_interval=5.0,
        busy_store_bytes=10_000,
    )
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        for tick in range(120):  # 12,000 events: about 6 full batches, and a part
            events = [usage_event(i, event_id=f"backlog-{tick}-{i}") for i in range(100)]
            await nc.publish(
                names.USAGE_SUBJECT, b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
            )
        await nc.flush()
        await wait_until(lambda: False, within=0.3)  # stored by the stream
        started = time.monotonic()
        await consumer.start()
        assert await wait_until(lambda: sum(n for _, n in stores) == 12_000, within=10, interval=0.02)
        assert len(stores) >= 5, stores
        # Well within one busy interval, whatever the machine's speed.
        assert stores[-1][0] - started < 3.0, [round(when - started, 2) for when, _ in stores]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(stores)]
        assert max(gaps) < 0.5, gaps
    finally:
        await consumer.stop()
        await nc.close()
        bus.stop()


@pytest.mark.nats
async def test_what_is_read_is_handed_over_every_store_interval_and_stored_every_busy_interval(
    tmp_path: Path,
) -> None:
    """A steady stream stored every ``busy_store_interval`` (3 s) still reaches ``on_delivered`` every
    ``handover_interval`` (1 s), before its store; ``on_flushed`` gets each batch's items once its store is
    over, and every item handed over is flushed exactly once."""
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    stores: list[tuple[float, int]] = []
    delivered: list[tuple[float, set[str]]] = []
    flushed: list[tuple[float, set[str]]] = []
    published: dict[str, float] = {}

    def ids(items: list[list[dict[str, Any]]]) -> set[str]:
        return {row["event_id"] for rows in items for row in rows}

    async def store(items: list[list[dict[str, Any]]]) -> None:
        stores.append((time.monotonic(), sum(len(rows) for rows in items)))

    consumer = _consumer(
        nc,
        "handover-test",
        store,
        store_interval=1.0,
        handover_interval=1.0,
        busy_store_interval=3.0,
        busy_store_bytes=5_000,
        on_delivered=lambda items: delivered.append((time.monotonic(), ids(items))),
        on_flushed=lambda items: flushed.append((time.monotonic(), ids(items))),
    )
    try:
        await ensure_topology(nc.jetstream())
        await consumer.start()
        await asyncio.wait_for(consumer.running.wait(), 10)
        started = time.monotonic()
        for tick in range(20 * 8):  # 20 messages of 2 events a second, for 8 s
            events = [usage_event(i, event_id=f"steady-{tick}-{i}") for i in range(2)]
            for event in events:
                published[event.event_id] = time.monotonic()
            await nc.publish(
                names.USAGE_SUBJECT, b"[" + b",".join(e.model_dump_json().encode() for e in events) + b"]"
            )
            await asyncio.sleep(max(0.0, started + (tick + 1) / 20 - time.monotonic()))
        assert await wait_until(lambda: sum(n for _, n in stores) == 320, within=10, interval=0.05)
        assert await wait_until(lambda: sum(len(i) for _, i in flushed) == 320, within=5, interval=0.05)
        # Stored every 3 s once busy (the first store after the quiet spell, then one a second later).
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(stores[2:])]
        assert gaps and all(gap >= 2.8 for gap in gaps), gaps
        # Every event reached on_delivered within about a second of its publication, well before its store.
        seen = {event_id: when for when, batch in delivered for event_id in batch}
        assert set(seen) == set(published)
        late = sorted(seen[e] - published[e] for e in published)
        assert late[-1] < 1.5, late[-5:]
        # Each event flushed once, after it was delivered.
        flushed_at = [(event_id, when) for when, batch in flushed for event_id in batch]
        assert len(flushed_at) == len(dict(flushed_at)) == 320
        assert all(when >= seen[event_id] for event_id, when in flushed_at)
    finally:
        await consumer.stop()
        await nc.close()
        bus.stop()


@pytest.mark.nats
async def test_a_stop_stores_what_the_pull_holds(tmp_path: Path) -> None:
    """Events pulled but held for the next store are stored at a stop, not left for the ack wait."""
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    stored: list[int] = []

    async def store(items: list[list[dict[str, Any]]]) -> None:
        stored.append(sum(len(rows) for rows in items))

    consumer = _consumer(nc, "stop-test", store, store_interval=5.0)
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        await consumer.start()
        await asyncio.wait_for(consumer.running.wait(), 10)
        await js.publish(names.USAGE_SUBJECT, usage_event(0, event_id="first").model_dump_json().encode())
        await wait_until(lambda: sum(stored) == 1, within=5, interval=0.02)
        # The next store is due in 5 s: these wait in the pull.
        for i in range(20):
            await js.publish(
                names.USAGE_SUBJECT, usage_event(i, event_id=f"held-{i}").model_dump_json().encode()
            )
        await asyncio.sleep(0.5)
        assert sum(stored) == 1
        stopping = time.monotonic()
        await consumer.stop()
        assert sum(stored) == 21 and time.monotonic() - stopping < 3
        await nc.flush()  # the acknowledgements sent
        info = await js.consumer_info(names.USAGE_STREAM, "stop-test")
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        await consumer.stop()
        await nc.close()
        bus.stop()
