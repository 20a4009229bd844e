"""The ClickHouse adapters: chDB for real (migrations, parameters), clickhouse-connect without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from aqueduct_accounting.adapters.clickhouse import (
    ChdbClickHouse,
    ClickHouseError,
    ServerClickHouse,
    server_options,
)
from aqueduct_accounting.adapters.migrations import apply_migrations, split_statements
from aqueduct_accounting.settings import default_migrations_dir


@pytest.mark.chdb
def test_migrations_apply_once_and_parameters_are_never_spliced(tmp_path: Path) -> None:
    engine = ChdbClickHouse(tmp_path / "chdb")
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


def test_server_urls_are_read_like_the_contract_says() -> None:
    options = server_options("https://analyst:p%40ss@ch.example.org/usage")
    assert options | {} == {
        "host": "ch.example.org",
        "port": 8443,
        "username": "analyst",
        "password": "p@ss",
        "database": "usage",
        "secure": True,
        "autogenerate_session_id": False,
    }
    assert server_options("http://ch:8123")["database"] == "default"
    with pytest.raises(ValueError):
        server_options("clickhouse://ch:9000/db")


def test_an_unreachable_server_fails_at_start_without_leaking_the_password() -> None:
    from aqueduct_cli.embedded import free_port

    port = free_port()
    with pytest.raises(ClickHouseError) as failure:
        ServerClickHouse(f"http://default:hunter2@127.0.0.1:{port}/default")
    assert f"127.0.0.1:{port}" in str(failure.value)
    assert "hunter2" not in str(failure.value)


@pytest.mark.chdb
def test_roll_ups_left_short_by_a_crash_are_rebuilt(tmp_path: Path) -> None:
    from aqueduct_accounting.application.rollups import repair_rollups

    engine = ChdbClickHouse(tmp_path / "chdb")
    try:
        apply_migrations(engine, default_migrations_dir())
        assert repair_rollups(engine) == []  # nothing stored yet
        rows = [
            {
                "event_id": f"r{i}",
                "occurred_at": f"2026-01-05 10:{i % 60:02d}:00.000",
                "org_id": "o",
                "input_tokens": 3,
                "cost_nanos": 7,
            }
            for i in range(100)
        ]
        engine.insert_json_rows("usage_events", rows)
        assert repair_rollups(engine) == []  # consistent: nothing to do
        # What a kill between the events' part and the views' parts leaves behind.
        engine.execute(
            "ALTER TABLE usage_by_minute DELETE WHERE bucket < '2026-01-05 10:30:00' SETTINGS mutations_sync = 2"
        )
        engine.execute("ALTER TABLE usage_by_day DELETE WHERE 1 SETTINGS mutations_sync = 2")

        assert repair_rollups(engine) == [
            "usage_by_minute@2026-01-05T10:00:00+00:00",
            "usage_by_day@2026-01-05T00:00:00+00:00",
        ]
        for table in ("usage_by_minute", "usage_by_hour", "usage_by_day"):
            assert engine.query(
                f"SELECT sum(requests), sum(input_tokens), sum(cost_nanos) FROM {table}"
            ).rows == [[100, 300, 700]], table
        assert repair_rollups(engine) == []
    finally:
        engine.close()
