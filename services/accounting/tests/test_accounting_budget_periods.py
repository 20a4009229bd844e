"""The budget enforcer on real chDB, a real NATS KV bucket and a real Valkey: a quota decision lifts on its
own when its period ends; running totals follow stored usage without re-aggregating; the proxies' spend
counters in Valkey are raised to what ClickHouse holds at start and again after Valkey lost its data."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from accounting_testing import usage_event
from redis.asyncio import Redis

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.adapters.quota_kv import QuotaBucket
from aqueduct_accounting.adapters.spend_counters import SpendCounters
from aqueduct_accounting.application.budgets import BudgetEnforcer
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.domain.budgets import Periods
from aqueduct_accounting.domain.pricing import Price, PriceBook
from aqueduct_accounting.domain.usage import row_cost, usage_row
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_cli.embedded import EmbeddedNats, EmbeddedValkey
from aqueduct_libs.budgets import counter_key, periods_at
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.snapshot import BudgetRule

pytestmark = [pytest.mark.nats, pytest.mark.chdb, pytest.mark.valkey]


PRICES = PriceBook({"m": Price(1_000_000, 0)})  # $0.001 per input token


def usage_row_with_cost(event) -> dict:  # type: ignore[no-untyped-def]
    """A row as accounting reads it: priced when read."""
    row = usage_row(event)
    row["cost_nanos"] = row_cost(PRICES, row)
    return row


class Engines:
    def __init__(self, tmp_path: Path) -> None:
        self.bus = EmbeddedNats(tmp_path / "nats").start()
        self.valkey = EmbeddedValkey(tmp_path / "valkey").start()
        self.engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
        apply_migrations(self.engine, default_migrations_dir())
        self.clickhouse = AsyncClickHouse(self.engine)
        self.ingest = UsageIngest(self.clickhouse, PRICES)


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[Engines, QuotaBucket]]:
    engines = Engines(tmp_path)
    nc = await nats.connect(engines.bus.url)
    js = nc.jetstream()
    await ensure_topology(js)
    try:
        yield engines, QuotaBucket(js)
    finally:
        await nc.close()
        engines.engine.close()
        engines.valkey.stop()
        engines.bus.stop()


async def test_daily_decision_lifts_at_midnight_and_monthly_at_month_end(engines) -> None:
    e, quota = engines
    now = [datetime(2026, 1, 31, 23, 59, 50, tzinfo=UTC)]
    enforcer = BudgetEnforcer(e.clickhouse, quota, clock=lambda: now[0])
    enforcer.put_budget(BudgetRule(scope="user", scope_id="u-day", daily_nanos=10**9))
    enforcer.put_budget(BudgetRule(scope="team", scope_id="t-month", monthly_nanos=10**9))
    await e.ingest.ingest(
        [
            usage_event(
                1,
                event_id="p1",
                user_id="u-day",
                team_id="t-other",
                model="m",
                input_tokens=1000,
                occurred_at=now[0] - timedelta(seconds=5),
            ),
            usage_event(
                2,
                event_id="p2",
                user_id="u-other",
                team_id="t-month",
                model="m",
                input_tokens=1000,
                occurred_at=datetime(2026, 1, 3, tzinfo=UTC),
            ),
        ]
    )

    decisions = await enforcer.check_once()
    assert set(decisions) == {"user.u-day", "team.t-month"}
    assert set(await quota.current()) == {"user.u-day", "team.t-month"}
    assert decisions["user.u-day"].until == datetime(2026, 2, 1, tzinfo=UTC)

    now[0] = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)  # a new day and a new month
    assert await enforcer.check_once() == {}
    assert await quota.current() == {}


async def test_running_totals_follow_stored_usage_without_re_aggregating(engines) -> None:
    e, quota = engines
    enforcer = BudgetEnforcer(e.clickhouse, quota, reconcile_seconds=3600)
    enforcer.put_budget(BudgetRule(scope="org", scope_id="o-run", daily_nanos=3 * 10**8))  # $0.30
    assert await enforcer.check_once() == {}
    assert enforcer.reconciliations == 1
    for i in range(3):  # $0.10 each
        result = await e.ingest.ingest(
            [usage_event(i, event_id=f"run-{i}", org_id="o-run", model="m", input_tokens=100)]
        )
        enforcer.usage_stored(result.stored)
        decisions = await enforcer.check_once()
    assert set(decisions) == {"org.o-run"}
    assert decisions["org.o-run"].budget == "org daily budget of $0.30"
    assert enforcer.reconciliations == 1  # the decision came from the running totals alone


async def test_valkey_counters_reconciled_from_clickhouse_and_after_a_loss(engines) -> None:
    e, quota = engines
    await e.ingest.ingest(
        [
            usage_event(i, event_id=f"rec-{i}", team_id="t-rec", model="m", input_tokens=10, output_tokens=0)
            for i in range(4)
        ]
    )
    valkey = Redis.from_url(e.valkey.url)
    counters = SpendCounters.from_url(e.valkey.url)
    key = counter_key("team", "t-rec", periods_at(datetime.now(UTC))[0])
    try:
        # A proxy settled more than ClickHouse holds yet on another team: reconciling takes nothing back.
        other = counter_key("team", "t-ahead", periods_at(datetime.now(UTC))[0])
        await valkey.hset(other, mapping={"sn": 999, "st": 9})
        enforcer = BudgetEnforcer(e.clickhouse, quota, counters=counters, reconcile_seconds=3600)
        enforcer.put_budget(BudgetRule(scope="team", scope_id="t-rec", daily_nanos=10**9))
        enforcer.put_budget(BudgetRule(scope="team", scope_id="t-ahead", daily_tokens=100))
        await enforcer.check_once()
        assert await valkey.hmget(key, "sn", "st") == [b"40000000", b"40"]  # 4 x 10 tokens at $0.001
        assert await valkey.hmget(other, "sn", "st") == [b"999", b"9"]

        await valkey.flushall()  # Valkey lost its data
        await enforcer.check_once()  # the next pass (every second in the service) sees the loss
        assert await valkey.hmget(key, "sn", "st") == [b"40000000", b"40"]
        assert enforcer.reconciliations == 2
        await enforcer.check_once()
        assert enforcer.reconciliations == 2  # nothing lost: no reconciliation before it is due
    finally:
        await valkey.aclose()
        await counters.close()


async def test_a_reconciliation_during_a_store_counts_its_events_once(engines) -> None:
    """A reconciliation that reads ClickHouse between a store's insert and its ``usage_stored`` would put
    the insert's events in the running totals twice (raised to ClickHouse, then added): it waits for the
    store instead."""
    e, quota = engines
    enforcer = BudgetEnforcer(e.clickhouse, quota, reconcile_seconds=3600)
    enforcer.put_budget(BudgetRule(scope="team", scope_id="t-race", daily_nanos=3 * 10**8))  # $0.30
    await enforcer.check_once()
    periods = Periods.containing(datetime.now(UTC))
    inserted = asyncio.Event()
    reconciling: asyncio.Task[None] | None = None

    async def store() -> None:  # as accounting's store: the insert, then the count, holding storing()
        nonlocal reconciling
        async with enforcer.storing():
            events = [usage_event(1, event_id="race-1", team_id="t-race", model="m", input_tokens=200)]
            result = await e.ingest.ingest(events)  # $0.20, in ClickHouse now
            inserted.set()
            reconciling = asyncio.create_task(enforcer.reconcile(periods))
            await asyncio.sleep(0.2)  # the reconciliation would read ClickHouse meanwhile
            enforcer.usage_stored(result.stored, result.stored)

    await store()
    assert reconciling is not None
    await reconciling
    assert enforcer.reconciliations == 2
    # $0.20 once: no decision against $0.30 (twice would be $0.40).
    assert await enforcer.check_once() == {}
    [line] = [x for x in await enforcer.status([("team", "t-race")]) if x.period == "day"]
    assert line.spent == 200_000_000


async def test_usage_read_counts_at_once_and_leaves_the_count_when_stored_or_refused(engines) -> None:
    """Rows read and not stored yet count in decisions at once; stored, they count in the totals instead
    (once); refused, not at all; a row already stored (a redelivery) never counts as held."""
    e, quota = engines
    enforcer = BudgetEnforcer(
        e.clickhouse, quota, reconcile_seconds=3600, stored_already=e.ingest.stored_recently
    )
    enforcer.put_budget(BudgetRule(scope="user", scope_id="u-held", daily_nanos=3 * 10**8))  # $0.30
    await enforcer.check_once()

    def rows(*ids_and_tokens: tuple[str, int]) -> list[dict]:
        return [
            usage_row_with_cost(
                usage_event(i, event_id=event_id, user_id="u-held", model="m", input_tokens=n)
            )
            for i, (event_id, n) in enumerate(ids_and_tokens)
        ]

    read = rows(("held-1", 200), ("held-2", 100))  # $0.20 + $0.10
    enforcer.usage_held(read)
    assert set(await enforcer.check_once()) == {"user.u-held"}  # $0.30 read: decided before any store
    enforcer.usage_released(read[1:])  # held-2 refused (dead letters): $0.20 left
    assert await enforcer.check_once() == {}
    result = await e.ingest.ingest_rows([dict(read[0])])
    enforcer.usage_stored(result.stored, read[:1])  # held-1 stored: in the totals, not held
    assert await enforcer.check_once() == {}
    enforcer.usage_held(rows(("held-1", 200)))  # a redelivery of what is stored: not counted again
    assert await enforcer.check_once() == {}
    enforcer.usage_held(rows(("held-3", 100)))  # $0.20 stored + $0.10 read
    assert set(await enforcer.check_once()) == {"user.u-held"}
