"""What cannot be stored goes to the dead-letter stream, and ingest goes on: the consumer as bootstrap builds
it, on a real NATS and a real chDB, with a store that refuses chosen events (a fault injected on purpose,
standing in for a value the engine refuses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from accounting_testing import usage_event, wait_until

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.dead_letters import DeadLetters
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.application.ingest_health import IngestHealth
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.usage import UsageMessage, usage_message_from_json, usage_message_parts
from aqueduct_accounting.entrypoints.dead_letter_path import DeadLetterPolicy
from aqueduct_accounting.entrypoints.stream_consumer import BatchConsumer, broker_on
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology

pytestmark = [pytest.mark.nats, pytest.mark.chdb]


class Rig:
    def __init__(self, js: Any, engine: ClickHouse, durable: str) -> None:
        self.js = js
        self.engine = engine
        self.refused: set[str] = set()  # event ids the store refuses
        self.engine_up = True
        self.broker = broker_on(js._nc)  # connected by the consumer's start
        self.letters = DeadLetters(self.broker)
        ingest = UsageIngest(AsyncClickHouse(engine), PriceBook())

        async def store(messages: list[UsageMessage]) -> None:
            rows = [row for m in messages for row in m.rows]
            if not self.engine_up:
                raise RuntimeError("engine down")
            bad = [r["event_id"] for r in rows if r["event_id"] in self.refused]
            if bad:
                raise RuntimeError(f"Cannot parse input: {bad[0]}")
            await ingest.ingest_rows(rows)

        async def healthy() -> bool:
            return self.engine_up

        self.consumer: BatchConsumer[UsageMessage] = BatchConsumer(
            self.broker,
            stream=names.USAGE_STREAM,
            subject=names.USAGE_SUBJECT,
            durable=durable,
            decode=usage_message_from_json,
            store=store,
            batch_size=500,
            flush_interval=0.2,
            max_ack_pending=10_000,
            ack_wait=30,
            dead_letters=DeadLetterPolicy(
                self.letters,
                max_tries=2,
                rejected_of=lambda m: m.rejected,
                split=lambda payload: usage_message_parts(payload, usage_message_from_json),
                healthy=healthy,
                retry_delay=0.05,
            ),
        )

    def stored(self, prefix: str) -> int:
        query = "SELECT count() FROM usage_events WHERE startsWith(event_id, {p:String})"
        return int(self.engine.query(query, {"p": prefix}).rows[0][0])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    apply_migrations(engine, default_migrations_dir())
    js = nc.jetstream()
    await ensure_topology(js)
    test_rig = Rig(js, engine, "dl-test")
    await test_rig.consumer.start()
    try:
        yield test_rig
    finally:
        await test_rig.consumer.stop()
        await nc.close()
        engine.close()
        bus.stop()


async def _letters(rig: Rig, at_least: int, within: float = 10.0) -> list:
    for _ in range(int(within / 0.1)):
        found = await rig.letters.list()
        if len(found) >= at_least:
            return found
        await asyncio.sleep(0.1)
    return await rig.letters.list()


def _json(event_id: str) -> bytes:
    return usage_event(0, event_id=event_id).model_dump_json().encode()


async def test_a_message_the_store_refuses_is_dead_lettered_and_the_rest_is_stored(rig: Rig) -> None:
    rig.refused = {"a-013", "b-1"}
    for i in range(40):
        await rig.js.publish(names.USAGE_SUBJECT, _json(f"a-{i:03d}"))
    # One message of three events, the middle one refused: only that event becomes a letter.
    group = b"[" + b",".join(_json(f"b-{i}") for i in range(3)) + b"]"
    await rig.js.publish(names.USAGE_SUBJECT, group)

    assert await wait_until(lambda: rig.stored("a-") == 39 and rig.stored("b-") == 2, within=30)
    letters = await _letters(rig, at_least=2)  # they go out once the batch's isolation is over
    assert sorted((orjson.loads(s.letter.payload)["event_id"], s.letter.index) for s in letters) == [
        ("a-013", None),
        ("b-1", 1),
    ]
    assert all("Cannot parse input" in s.letter.reason and s.letter.tries == 2 for s in letters)
    assert {s.letter.consumer for s in letters} == {"dl-test"}

    # Ingest goes on right after.
    published = time.monotonic()
    await rig.js.publish(names.USAGE_SUBJECT, _json("c-0"))
    assert await wait_until(lambda: rig.stored("c-") == 1, within=5)
    assert time.monotonic() - published < 2.0

    # Fixed: re-driving stores it, once, however often it is re-driven.
    rig.refused = set()
    stored = next(s for s in letters if s.letter.index is None)
    for _ in range(2):
        await rig.consumer.guard.redrive(rig.consumer.decode(stored.letter.payload.encode()))
    assert rig.stored("a-") == 40


async def test_while_the_engine_is_down_nothing_is_dead_lettered_and_the_consumer_reports_stuck(
    rig: Rig,
) -> None:
    rig.engine_up = False
    for i in range(5):
        await rig.js.publish(names.USAGE_SUBJECT, _json(f"d-{i}"))
    assert await wait_until(lambda: rig.consumer.failing_since is not None, within=10)
    await asyncio.sleep(1.0)  # many tries, far beyond max_tries
    assert await rig.letters.list() == []
    assert await rig.consumer.pending() == 5

    rig.engine_up = True
    assert await wait_until(lambda: rig.stored("d-") == 5, within=15)
    assert await wait_until(lambda: rig.consumer.failing_since is None, within=5)
    assert await rig.letters.list() == []


async def test_health_reports_a_stuck_or_far_behind_ingest_and_recovers(rig: Rig) -> None:
    health = IngestHealth([rig.consumer], max_lag=3, stuck_after=0.5)
    await health.measure()
    assert health.problems() == []

    rig.engine_up = False
    for i in range(6):
        await rig.js.publish(names.USAGE_SUBJECT, _json(f"h-{i}"))
    await asyncio.sleep(1.0)
    await health.measure()
    problems = health.problems()
    assert any("every store has failed" in p for p in problems), problems
    assert any("6 messages behind" in p for p in problems), problems

    rig.engine_up = True
    assert await wait_until(lambda: rig.stored("h-") == 6, within=15)

    async def healthy_again() -> bool:
        await health.measure()
        return not health.problems()

    deadline = time.monotonic() + 15
    while not await healthy_again():
        assert time.monotonic() < deadline, health.problems()
        await asyncio.sleep(0.2)
