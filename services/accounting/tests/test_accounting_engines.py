"""The ClickHouse adapter: on chDB for real (migrations, parameters), and its server path without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aqueduct_accounting.adapters.clickhouse import ClickHouse, ClickHouseError, clickhouse_dsn, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations, split_statements
from aqueduct_accounting.settings import default_migrations_dir


@pytest.mark.chdb
def test_migrations_apply_once_and_parameters_are_never_spliced(tmp_path: Path) -> None:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        shipped = sorted(p.name[:4] for p in default_migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.sql"))
        assert shipped[:5] == ["0001", "0002", "0003", "0004", "0005"] and "0007" in shipped
        assert apply_migrations(engine, default_migrations_dir()) == shipped
        assert apply_migrations(engine, default_migrations_dir()) == []
        tables = {row[0] for row in engine.query("SHOW TABLES").rows}
        assert {
            "usage_events",
            "usage_by_minute",
            "usage_by_hour",
            "usage_by_day",
            "directory_events",
        } <= tables

        tricky = "o'brien\\'); DROP TABLE usage_events; --"
        engine.insert_json_rows(
            "usage_events",
            [
                {
                    "event_id": "e1",
                    "occurred_at": "2026-01-01 00:00:00.000",
                    "org_id": tricky,
                    "input_tokens": 5,
                }
            ],
        )
        found = engine.query(
            "SELECT org_id, input_tokens FROM usage_events WHERE org_id = {o:String} AND event_id IN {ids:Array(String)}",
            {"o": tricky, "ids": ["e1", tricky]},
        )
        assert found.rows == [[tricky, 5]]
        assert engine.query("SELECT sum(requests) FROM usage_by_hour").rows == [[1]]
        with pytest.raises(ClickHouseError):
            engine.query("SELECT nope FROM usage_events")
    finally:
        engine.close()


def test_statements_split_at_line_ends_and_comments_drop() -> None:
    sql = "-- a comment\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- another\nSELECT 1;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]


def test_the_dsn_names_the_engine(tmp_path: Path) -> None:
    assert clickhouse_dsn("", tmp_path) == f"chdb://{tmp_path.resolve()}/chdb"
    assert clickhouse_dsn("http://ch:8123/usage", tmp_path) == "http://ch:8123/usage"
    with pytest.raises(ClickHouseError) as failure:
        ClickHouse("clickhouse://default:hunter2@ch:9000/db")
    assert "hunter2" not in str(failure.value)


def test_an_unreachable_server_fails_at_start_without_leaking_the_password() -> None:
    from aqueduct_cli.embedded import free_port

    port = free_port()
    with pytest.raises(ClickHouseError) as failure:
        ClickHouse(f"http://default:hunter2@127.0.0.1:{port}/default")
    assert f"127.0.0.1:{port}" in str(failure.value)
    assert "hunter2" not in str(failure.value)


@pytest.mark.chdb
def test_a_deployment_with_three_rollup_tables_migrates_to_one_with_the_same_sums(tmp_path: Path) -> None:
    """0008 replaces usage_by_minute/hour/day (tables fed by three views) with views of usage_rollup: a
    database migrated up to 0007, with rows in it, reads the same roll-ups afterwards, and new events
    reach all three."""
    old = tmp_path / "old"
    old.mkdir()
    for source in default_migrations_dir().glob("000[1-7]_*.sql"):
        (old / source.name).write_text(source.read_text())
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))

    def rows(first: int, count: int) -> list[dict[str, object]]:
        return [
            {
                "event_id": f"m-{i}",
                "occurred_at": f"2026-01-05 {10 + i % 3}:{i % 60:02d}:00.000",
                "org_id": f"o{i % 2}",
                "model": "m",
                "input_tokens": i,
                "reasoning_tokens": 1,
                "cost_nanos": 7,
            }
            for i in range(first, first + count)
        ]

    sums = "SELECT sum(requests), sum(input_tokens), sum(reasoning_tokens), sum(cost_nanos), uniqExact(bucket) FROM "
    try:
        apply_migrations(engine, old)
        engine.insert_json_rows("usage_events", rows(0, 90))
        before = {
            table: engine.query(sums + table).rows
            for table in ("usage_by_minute", "usage_by_hour", "usage_by_day")
        }
        assert before["usage_by_hour"][0][:4] == [90, sum(range(90)), 90, 630]

        assert apply_migrations(engine, default_migrations_dir())[0] == "0008"
        kinds = dict(engine.query("SELECT name, engine FROM system.tables WHERE name LIKE 'usage_%'").rows)
        assert kinds["usage_by_minute"] == kinds["usage_by_hour"] == kinds["usage_by_day"] == "View"
        # 0009 then puts the roll-ups into usage_totals, written by accounting rather than by a view.
        assert "usage_by_hour_mv" not in kinds and kinds["usage_totals"] == "SummingMergeTree"
        for table, expected in before.items():
            assert engine.query(sums + table).rows == expected, table

        later = (datetime.now(UTC) + timedelta(seconds=2)).isoformat(" ", "milliseconds")[:23]
        engine.insert_json_rows("usage_events", [{**row, "recorded_at": later} for row in rows(90, 10)])
        for table in before:
            assert engine.query(f"SELECT sum(requests) FROM {table}").rows == [[100]], table
    finally:
        engine.close()
