"""A quota decision lifts on its own when its period ends (the enforcer with a controlled clock, on real
chDB and a real NATS KV bucket)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from accounting_testing import usage_event

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ChdbClickHouse
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.adapters.quota_kv import QuotaBucket
from aqueduct_accounting.application.budgets import BudgetEnforcer
from aqueduct_accounting.application.directory_mirror import DirectoryMirror
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.domain.pricing import Price, PriceBook
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.events import DirectoryEvent

pytestmark = [pytest.mark.nats, pytest.mark.chdb]


async def test_daily_decision_lifts_at_midnight_and_monthly_at_month_end(tmp_path: Path) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()
    engine = ChdbClickHouse(tmp_path / "chdb")
    nc = await nats.connect(bus.url)
    try:
        apply_migrations(engine, default_migrations_dir())
        js = nc.jetstream()
        await ensure_topology(js)
        clickhouse = AsyncClickHouse(engine)
        quota = QuotaBucket(js)
        now = [datetime(2026, 1, 31, 23, 59, 50, tzinfo=UTC)]
        enforcer = BudgetEnforcer(clickhouse, quota, clock=lambda: now[0])
        await DirectoryMirror(clickhouse).store(
            [
                DirectoryEvent(
                    notification_id=1,
                    type="UserBudgetsSet",
                    aggregate_type="User",
                    aggregate_id="u-day",
                    aggregate_version=2,
                    actor="admin",
                    occurred_at=now[0],
                    data={"budgets": {"daily_usd": "1"}},
                ),
                DirectoryEvent(
                    notification_id=2,
                    type="TeamBudgetsSet",
                    aggregate_type="Team",
                    aggregate_id="t-month",
                    aggregate_version=2,
                    actor="admin",
                    occurred_at=now[0],
                    data={"budgets": {"monthly_usd": "1"}},
                ),
            ]
        )
        ingest = UsageIngest(clickhouse, PriceBook({"m": Price(1_000_000, 0)}))  # $0.001 per input token
        await ingest.ingest(
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
    finally:
        await nc.close()
        engine.close()
        bus.stop()
