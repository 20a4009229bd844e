"""ClickHouse access is safe under concurrency: reports, inserts and budget checks at the same time on one
chDB engine never swap each other's query parameters, and every count stays exact."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from accounting_testing import usage_event

from aqueduct_accounting.adapters.analyst_sql import AnalystEngine, AnalystQueries, QueryLimits
from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.application.reports import Reports, ReportWindow
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.scope import UsageFilter, Viewer
from aqueduct_accounting.domain.usage import clickhouse_time
from aqueduct_accounting.settings import default_migrations_dir

pytestmark = [pytest.mark.chdb]

START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
BATCHES = 40
PER_BATCH = 25

# The shape of a budget check: spend per scope since the start of the day and of the month.
SPEND = """
SELECT user_id, sumIf(cost_nanos, bucket >= {day:DateTime64(3, 'UTC')}), sum(input_tokens + output_tokens)
FROM usage_by_day
WHERE bucket >= {month:DateTime64(3, 'UTC')} AND user_id IN {user_ids:Array(String)}
GROUP BY user_id
"""


async def test_reports_inserts_and_budget_checks_in_parallel_never_fail(tmp_path: Path) -> None:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        apply_migrations(engine, default_migrations_dir())
        clickhouse = AsyncClickHouse(engine)
        ingest = UsageIngest(clickhouse, PriceBook())
        analyst = AnalystQueries(AnalystEngine.read_only(embedded_dsn(tmp_path / "chdb"), QueryLimits()))
        reports = Reports(clickhouse, analyst)
        admin = Viewer("admin", admin=True)
        window = ReportWindow(START - timedelta(days=1), START + timedelta(days=1))
        events = [
            usage_event(i, event_id=f"par-{i}", occurred_at=START + timedelta(seconds=i))
            for i in range(BATCHES * PER_BATCH)
        ]
        inserting = True
        failures: list[BaseException] = []

        async def insert_all() -> None:
            nonlocal inserting
            try:
                # Two writers at once, each with its own half, plus a redelivery of the first batch.
                halves = [events[: len(events) // 2], events[len(events) // 2 :]]

                async def write(part: list) -> None:
                    for start in range(0, len(part), PER_BATCH):
                        await ingest.ingest(part[start : start + PER_BATCH])

                await asyncio.gather(*(write(h) for h in halves))
                await ingest.ingest(events[:PER_BATCH])
            finally:
                inserting = False

        async def keep_reporting() -> int:
            done = 0
            while inserting:
                try:
                    await reports.summary(admin, UsageFilter(), window, "user")
                    await reports.timeseries(admin, UsageFilter(), window, "minute", "model")
                    done += 1
                except Exception as exc:
                    failures.append(exc)
            return done

        async def keep_checking_budgets() -> int:
            done = 0
            while inserting:
                try:
                    await clickhouse.query(
                        SPEND,
                        {
                            "day": clickhouse_time(START.replace(hour=0)),
                            "month": clickhouse_time(START.replace(day=1, hour=0)),
                            "user_ids": [f"user-{i}" for i in range(5)],
                        },
                    )
                    done += 1
                except Exception as exc:
                    failures.append(exc)
            return done

        _, reported, checked = await asyncio.gather(insert_all(), keep_reporting(), keep_checking_budgets())

        assert not failures, f"{len(failures)} concurrent statements failed, e.g. {failures[0]!r}"
        assert reported > 0 and checked > 0, "reports and budget checks must have run during the inserts"
        total = engine.query("SELECT count(), uniqExact(event_id), sum(input_tokens) FROM usage_events").rows
        assert [int(v) for v in total[0]] == [
            len(events),
            len(events),
            sum(e.input_tokens for e in events),
        ]
        summary = await reports.summary(admin, UsageFilter(), window, None)
        assert summary["totals"]["requests"] == len(events)
    finally:
        engine.close()
