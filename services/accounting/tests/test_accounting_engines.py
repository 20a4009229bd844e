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
        assert apply_migrations(engine, default_migrations_dir()) == ["0001", "0002", "0003"]
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
