"""Self-repair: a table that is gone is created again at start whatever the migration record says, and
what it copied from a stream is refilled by replaying the stream; the roll-ups agree with the raw events."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from accounting_testing import AccountingProcess, publish_usage, usage_event, wait_until

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.dead_letters import DeadLetters
from aqueduct_accounting.adapters.migrations import apply_migrations, existing_tables
from aqueduct_accounting.application.quarantine import quarantine_out_of_bounds
from aqueduct_accounting.application.rollups import roll_up
from aqueduct_accounting.application.self_repair import migrate_and_repair
from aqueduct_accounting.entrypoints.stream_consumer import broker_on
from aqueduct_accounting.settings import default_migrations_dir
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.events import DirectoryEvent
from aqueduct_libs.snapshot import BudgetRule

pytestmark = [pytest.mark.chdb]

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
ROLLUPS = ("usage_by_minute", "usage_by_hour", "usage_by_day")


def _rows(engine: ClickHouse, sql: str) -> list[list[int]]:
    return [[int(v or 0) for v in row] for row in engine.query(sql).rows]


def _insert(engine: ClickHouse, count: int, first: int = 0) -> None:
    engine.insert_json_rows(
        "usage_events",
        [
            {
                "event_id": f"e-{i}",
                "occurred_at": (START + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S.000"),
                "org_id": "o",
                "input_tokens": i,
                "status_code": 200,
            }
            for i in range(first, count)
        ],
    )


def test_a_dropped_table_is_created_again_whatever_the_record_says(tmp_path: Path) -> None:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
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


def test_lost_roll_ups_and_their_views_are_recreated_and_count_every_event(tmp_path: Path) -> None:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        migrate_and_repair(engine, default_migrations_dir())
        _insert(engine, 30)
        assert roll_up(engine, time.time() + 1) == 30  # rolled up: in usage_totals, behind a mark
        _insert(engine, 60, first=30)  # not yet rolled up: in the views' tail
        engine.execute("DROP TABLE usage_by_day")
        engine.execute("DROP TABLE usage_totals")  # the roll-ups themselves, rows, marks and all

        repair = migrate_and_repair(engine, default_migrations_dir())

        assert repair.created == ["usage_by_day", "usage_totals"]
        assert not repair.replay_usage and not repair.replay_directory
        raw = _rows(engine, "SELECT count(), sum(input_tokens) FROM usage_events")
        assert raw[0][0] == 60
        for table in ROLLUPS:  # every event is in the tail again, until rolled up anew
            assert _rows(engine, f"SELECT sum(requests), sum(input_tokens) FROM {table}") == raw, table
        assert roll_up(engine, time.time() + 1) == 60
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
    # Today, for a user whose budget of 10 tokens a day these use up.
    today = [usage_event(i, event_id=f"sr-today-{i}", user_id="user-spent") for i in range(3)]
    events += today
    await publish_usage(js, events)
    # Budget definitions come from the directory's snapshot (not from the mirror, which can be lost).
    snapshot = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
    rule = BudgetRule(scope="user", scope_id="user-spent", daily_tokens=10)
    await snapshot.put(names.snapshot_budget_key("user", "user-spent"), rule.model_dump_json().encode())
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

    expected = [[303, 5, 303, sum(e.input_tokens for e in events)]]
    assert await wait_until(lambda: counts() == expected, within=30)
    quota = await js.key_value(names.QUOTA_BUCKET)

    async def refused() -> bool:
        try:
            return bool((await quota.get("user.user-spent")).value)
        except Exception:
            return False

    for _ in range(100):
        if await refused():
            break
        await asyncio.sleep(0.1)
    assert await refused(), "the used-up budget is decided"

    accounting.stop()
    engine = ClickHouse(embedded_dsn(accounting.data_dir / "chdb"))
    try:
        engine.execute("DROP TABLE usage_events")
        engine.execute("DROP TABLE directory_events")
    finally:
        engine.close()
    accounting.start()  # ready: it did not refuse to start

    # Budgets still hold: the decision is never lifted while the mirror is refilled.
    for _ in range(30):
        assert await refused(), "a budget read from a half-refilled table lifted the decision"
        await asyncio.sleep(0.1)
    assert await wait_until(lambda: counts() == expected, within=60), counts()
    assert await refused()


@pytest.mark.nats
async def test_rows_stored_out_of_bounds_by_an_older_version_are_dead_lettered_at_start(
    tmp_path: Path,
) -> None:
    """Rows an unchecked version stored (a date before 1970, status 70000 stored as 4464, a cost wrapped
    negative) would stop the roll-up repair or silence budgets: they become dead letters, once."""
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        js = nc.jetstream()
        await ensure_topology(js)
        migrate_and_repair(engine, default_migrations_dir())
        _insert(engine, 10)
        base = {
            "org_id": "o",
            "input_tokens": 1,
            "token_id": "t",
            "user_id": "u",
            "endpoint": "e",
            "model": "m",
        }
        engine.insert_json_rows(
            "usage_events",
            [
                {
                    **base,
                    "event_id": "old-1969",
                    "occurred_at": "1969-12-31 23:59:59.000",
                    "status_code": 200,
                },
                {
                    **base,
                    "event_id": "old-status",
                    "occurred_at": "2026-06-01 10:00:00.000",
                    "status_code": 4464,
                },
                {
                    **base,
                    "event_id": "old-wrapped",
                    "occurred_at": "2026-06-01 10:00:00.000",
                    "status_code": 200,
                    "cost_nanos": -8_446_744_073_709_551_616,
                },
            ],
        )
        broker = broker_on(nc)
        await broker.connect()
        letters = DeadLetters(broker)
        clickhouse = AsyncClickHouse(engine)

        assert await quarantine_out_of_bounds(clickhouse, letters, "accounting-usage") == 3
        assert await quarantine_out_of_bounds(clickhouse, letters, "accounting-usage") == 0

        stored = {json.loads(s.letter.payload)["event_id"]: s.letter.reason for s in await letters.list()}
        assert set(stored) == {"old-1969", "old-status", "old-wrapped"}
        assert "occurred_at" in stored["old-1969"] and "status_code 4464" in stored["old-status"]
        assert "cost_nanos -8446744073709551616" in stored["old-wrapped"]
        raw = _rows(engine, "SELECT count(), sum(input_tokens) FROM usage_events")
        assert raw == [[10, sum(range(10))]]
        for table in ROLLUPS:
            assert _rows(engine, f"SELECT sum(requests), sum(input_tokens) FROM {table}") == raw, table
    finally:
        await nc.close()
        engine.close()
        bus.stop()


def test_a_lost_object_comes_back_in_its_latest_definition(tmp_path: Path) -> None:
    """A later migration that replaces a view (drop, create anew) and adds a column: the repair recreates
    the latest definition and adds the column again."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for source in default_migrations_dir().glob("*.sql"):
        (folder / source.name).write_text(source.read_text())
    (folder / "9001_replace_a_view.sql").write_text(
        "DROP VIEW IF EXISTS usage_by_day;\n"
        "CREATE VIEW IF NOT EXISTS usage_by_day AS\n"
        "SELECT toDateTime(toStartOfDay(occurred_at), 'UTC') AS bucket, org_id, count() * 10 AS requests\n"
        "FROM usage_events GROUP BY bucket, org_id;\n"
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS request_id String DEFAULT '';\n"
    )
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        migrate_and_repair(engine, folder)
        engine.execute("DROP TABLE usage_by_day")
        engine.execute("DROP TABLE usage_events")
        repair = migrate_and_repair(engine, folder)
        assert repair.created == ["usage_by_day", "usage_events"]
        _insert(engine, 3)
        assert _rows(
            engine, "SELECT count() FROM system.columns WHERE table = 'usage_events' AND name = 'request_id'"
        ) == [[1]]
        assert _rows(engine, "SELECT sum(requests) FROM usage_by_day") == [[30]]  # the replacing definition
    finally:
        engine.close()
