"""Self-repair: a table that is gone is created again at start whatever the migration record says, and
what it copied from a stream is refilled by replaying the stream; the roll-ups agree with the raw events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from accounting_testing import AccountingProcess, publish_usage, usage_event, wait_until

from aqueduct_accounting.adapters.clickhouse import ChdbClickHouse
from aqueduct_accounting.adapters.migrations import apply_migrations, existing_tables
from aqueduct_accounting.application.self_repair import migrate_and_repair
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_libs import names
from aqueduct_libs.events import DirectoryEvent

pytestmark = [pytest.mark.chdb]

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
ROLLUPS = ("usage_by_minute", "usage_by_hour", "usage_by_day")


def _rows(engine: ChdbClickHouse, sql: str) -> list[list[int]]:
    return [[int(v or 0) for v in row] for row in engine.query(sql).rows]


def _insert(engine: ChdbClickHouse, count: int, first: int = 0) -> None:
    engine.insert_json_rows(
        "usage_events",
        [
            {
                "event_id": f"e-{i}",
                "occurred_at": (START + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S.000"),
                "org_id": "o",
                "input_tokens": i,
            }
            for i in range(first, count)
        ],
    )


def test_a_dropped_table_is_created_again_whatever_the_record_says(tmp_path: Path) -> None:
    engine = ChdbClickHouse(tmp_path / "chdb")
    try:
        first = migrate_and_repair(engine, default_migrations_dir())
        assert {"usage_events", "directory_events", *ROLLUPS} <= set(first.created)
        assert migrate_and_repair(engine, default_migrations_dir()).created == []
        _insert(engine, 90)

        engine.execute("DROP TABLE usage_events")
        engine.execute("DROP TABLE directory_events")
        assert apply_migrations(engine, default_migrations_dir()) == []  # the record alone repairs nothing
        repair = migrate_and_repair(engine, default_migrations_dir())

        assert repair.created == ["directory_events", "usage_events"]
        assert repair.replay_usage and repair.replay_directory
        assert {"usage_events", "directory_events"} <= existing_tables(engine)
        for table in ROLLUPS:  # emptied: the replay of the stream counts every event again
            assert _rows(engine, f"SELECT count() FROM {table}") == [[0]]
        _insert(engine, 90)  # what the replay does: the views fill the roll-ups again
        assert _rows(engine, "SELECT sum(requests), sum(input_tokens) FROM usage_by_hour") == [
            [90, sum(range(90))]
        ]
    finally:
        engine.close()


def test_a_lost_rollup_view_is_recreated_and_the_rollup_rebuilt(tmp_path: Path) -> None:
    engine = ChdbClickHouse(tmp_path / "chdb")
    try:
        migrate_and_repair(engine, default_migrations_dir())
        _insert(engine, 30)
        engine.execute("DROP TABLE usage_by_hour_mv")
        _insert(engine, 60, first=30)  # the hour roll-up misses these
        engine.execute("DROP TABLE usage_by_day")

        repair = migrate_and_repair(engine, default_migrations_dir())

        assert repair.created == ["usage_by_day", "usage_by_hour_mv"]
        assert not repair.replay_usage and not repair.replay_directory
        raw = _rows(engine, "SELECT count(), sum(input_tokens) FROM usage_events")
        for table in ROLLUPS:
            assert _rows(engine, f"SELECT sum(requests), sum(input_tokens) FROM {table}") == raw, table
    finally:
        engine.close()


@pytest.mark.nats
async def test_usage_table_and_directory_mirror_dropped_are_refilled_after_a_restart(
    js, accounting: AccountingProcess, admin_token: str
) -> None:
    events = [
        usage_event(i, event_id=f"sr-{i}", occurred_at=START + timedelta(seconds=i)) for i in range(300)
    ]
    await publish_usage(js, events)
    for n in range(1, 6):
        event = DirectoryEvent(
            notification_id=n,
            type="OrgBudgetsSet",
            aggregate_type="Org",
            aggregate_id=f"org-{n}",
            aggregate_version=1,
            actor="admin-1",
            occurred_at=START,
            data={"budgets": {"daily_usd": "5"}},
        )
        await js.publish(
            names.directory_event_subject(event.type),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": str(n)},
        )

    def counts() -> list[list[int]]:
        answer = accounting.sql(
            admin_token,
            "SELECT (SELECT count() FROM usage_events), (SELECT count() FROM directory_events), "
            "(SELECT sum(requests) FROM usage_by_day), (SELECT sum(input_tokens) FROM usage_by_minute)",
        )
        return answer.json()["rows"] if answer.status_code == 200 else []

    expected = [[300, 5, 300, sum(e.input_tokens for e in events)]]
    assert await wait_until(lambda: counts() == expected, within=30)

    accounting.stop()
    engine = ChdbClickHouse(accounting.data_dir / "chdb")
    try:
        engine.execute("DROP TABLE usage_events")
        engine.execute("DROP TABLE directory_events")
    finally:
        engine.close()
    accounting.start()  # ready: it did not refuse to start

    assert await wait_until(lambda: counts() == expected, within=60), counts()
