"""Ad-hoc SQL cannot escape read-only: every attempt below is refused, and afterwards no table, row or
file has changed. Against the accounting service on chDB (as `aqueduct up` runs it), and by the rules
alone on a connection that is not read-only (as a server's analyst profile might be misconfigured): the
one clickhouse-connect adapter, the server's code path, here on chDB's backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from accounting_testing import AccountingProcess, publish_usage, usage_event

from aqueduct_accounting.adapters.analyst_sql import AnalystEngine, AnalystQueries, QueryLimits
from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, ClickHouseError, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.application.reports import Reports
from aqueduct_accounting.domain.readonly_sql import ReadOnlySqlError
from aqueduct_accounting.settings import default_migrations_dir

# {target}: a file an attack tries to create; {canary}: a file with known contents an attack tries to change.
ESCAPES = [
    # several statements, however hidden
    "SELECT $$'$$; DROP TABLE usage_events; SELECT 1 --'",
    "SELECT $$'$$; INSERT INTO FUNCTION file('{target}', 'LineAsString') SELECT 'owned'; SELECT 1 --'",
    "SELECT 1; DROP TABLE usage_events",
    "SELECT 1 -- a comment\n; DROP TABLE usage_events",
    "SELECT 1 /* ; */ ; TRUNCATE TABLE usage_events",
    "/* SELECT */ DROP TABLE usage_events",
    "-- SELECT 1\nDROP TABLE usage_events",
    "SELECT 'it''s'; DROP TABLE usage_events; --",
    "SELECT 'a\\'; DROP TABLE usage_events; --'; DROP TABLE usage_events",
    # unicode look-alikes: a full-width and a Greek semicolon, full-width letters, a zero-width space
    "SELECT 1\uff1b DROP TABLE usage_events",
    "SELECT 1\u037e DROP TABLE usage_events",
    "\uff24\uff32\uff2f\uff30 TABLE usage_events",
    "SEL\u200bECT 1; DROP TABLE usage_events",
    # writes and DDL
    "DROP TABLE usage_events",
    "TRUNCATE TABLE usage_events",
    "ALTER TABLE usage_events DELETE WHERE 1",
    "INSERT INTO usage_events (event_id) VALUES ('forged')",
    "WITH x AS (SELECT 1) INSERT INTO usage_events (event_id) SELECT 'forged'",
    "CREATE TABLE evil (a UInt8) ENGINE = Memory",
    "RENAME TABLE usage_events TO evil",
    "DETACH TABLE usage_events",
    "OPTIMIZE TABLE usage_events FINAL",
    "SET readonly = 0",
    "USE system",
    "SYSTEM SHUTDOWN",
    "KILL QUERY WHERE 1",
    # files, on the way out and in
    "INSERT INTO FUNCTION file('{canary}', 'LineAsString') SELECT 'owned'",
    "SELECT 'owned' INTO OUTFILE '{target}'",
    "SELECT 'owned' INTO OUTFILE '{canary}' TRUNCATE FORMAT CSV",
    "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
    "SELECT file('/proc/self/environ')",
    "WITH (SELECT file('{canary}')) AS leak SELECT leak",
    "SELECT 1 WHERE 'x' IN (SELECT * FROM file('{canary}', 'LineAsString'))",
    "SELECT * FROM view(SELECT * FROM file('{canary}', 'LineAsString'))",
    "SELECT 1 UNION ALL SELECT length(line) FROM file('{canary}', 'LineAsString')",
    "DESCRIBE file('{canary}', 'LineAsString')",
    "EXPLAIN PIPELINE SELECT * FROM file('{canary}', 'LineAsString')",
    # other servers and programs
    "SELECT * FROM url('http://127.0.0.1:9/', 'LineAsString')",
    "SELECT 1 WHERE 'x' IN url('http://127.0.0.1:9/', 'LineAsString')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/key', 'CSV')",
    "SELECT * FROM remote('127.0.0.1:9000', 'system', 'one')",
    "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'user', 'password')",
    "SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'user', 'password')",
    "SELECT * FROM jdbc('jdbc:mysql://127.0.0.1/db', 't')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:9000/f', 'CSV', 'a String')",
    "SELECT * FROM azureBlobStorage('http://127.0.0.1:9/acct', 'c', 'b.csv')",
    "SELECT * FROM executable('env', 'TSV', 'line String')",
    "SELECT * FROM input('a String')",
    "SELECT * FROM Python('os')",
    "SELECT dictGet('secrets', 'value', 1)",
    # SETTINGS and FORMAT tricks
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT * FROM (SELECT 1 SETTINGS max_result_rows = 0)",
    "SELECT number FROM system.numbers SETTINGS max_execution_time = 0",
    "SELECT 1 FORMAT TabSeparated",
    "SELECT 1 FORMAT Native",
    "SHOW TABLES INTO OUTFILE '{target}'",
    "SHOW DATABASES INTO OUTFILE '{target}' FORMAT CSV",
    "DESCRIBE usage_events INTO OUTFILE '{target}'",
    "SHOW CREATE TABLE usage_events INTO OUTFILE '{target}'",
    "EXPLAIN SELECT 1 INTO OUTFILE '{target}'",
    "SHOW COLUMNS FROM usage_events FORMAT CSV",
    "EXPLAIN SELECT 1 FORMAT CSV",
    "SHOW TABLES SETTINGS max_result_rows = 0",
    # the engine's secrets: users, settings, the host, the environment
    "SELECT name FROM system.users",
    "SELECT name, value FROM system.settings",
    "SELECT * FROM system.server_settings",
    "SELECT query FROM system.processes",
    "SELECT 1 WHERE 'default' IN system.users",
    "SELECT getSetting('max_memory_usage')",
    "SELECT getServerSetting('tcp_port')",
    "SELECT hostName(), fqdn()",
    "SHOW SETTINGS LIKE '%'",
    "SHOW USERS",
    "SHOW GRANTS",
    "SHOW PROCESSLIST",
    "SHOW CREATE USER default",
]
ALLOWED = [
    ("SELECT count() FROM usage_events", [[1]]),
    ("WITH 2 AS two SELECT two", [[2]]),
    ("SELECT $$DROP TABLE usage_events$$ AS text", [["DROP TABLE usage_events"]]),
    ("SELECT count() FROM numbers(10)", [[10]]),
    ("SELECT 1 UNION ALL SELECT 2 ORDER BY 1", [[1], [2]]),
]


def _fill(query: str, tmp: Path) -> str:
    return query.replace("{target}", str(tmp / "escape-target.txt")).replace(
        "{canary}", str(tmp / "canary.txt")
    )


def _files(root: Path) -> set[str]:
    """Every file outside the engine's own store (whose parts merge on their own) and the logs."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "chdb" not in p.relative_to(root).parts and not p.name.endswith(".log")
    }


@pytest.mark.nats
@pytest.mark.chdb
async def test_every_escape_is_refused_and_nothing_changes(
    js, accounting: AccountingProcess, admin_token: str, module_dir: Path
) -> None:
    await publish_usage(js, [usage_event(0, event_id="escape-0")])
    for _ in range(100):
        if accounting.sql(admin_token, "SELECT count() FROM usage_events").json()["rows"] == [[1]]:
            break
        await asyncio.sleep(0.1)
    canary = module_dir / "canary.txt"
    canary.write_text("unchanged\n")
    tables_before = accounting.sql(admin_token, "SHOW TABLES").json()["rows"]
    files_before = _files(module_dir)

    answers = {query: accounting.sql(admin_token, _fill(query, module_dir)) for query in ESCAPES}

    let_through = {
        q: a.text[:200] for q, a in answers.items() if a.status_code != 400 or not a.json()["detail"]
    }
    assert not let_through
    assert accounting.sql(admin_token, "SHOW TABLES").json()["rows"] == tables_before
    assert ["usage_events"] in tables_before
    assert accounting.sql(admin_token, "SELECT count() FROM usage_events").json()["rows"] == [[1]]
    assert canary.read_text() == "unchanged\n"
    assert not (module_dir / "escape-target.txt").exists()
    assert _files(module_dir) == files_before
    assert accounting.process is not None and accounting.process.poll() is None
    for query, rows in ALLOWED:
        answer = accounting.sql(admin_token, query)
        assert answer.status_code == 200, (query, answer.text)
        assert answer.json()["rows"] == rows


@pytest.mark.nats
@pytest.mark.chdb
async def test_the_allowed_kinds_answer(accounting: AccountingProcess, admin_token: str) -> None:
    for query in (
        "SHOW TABLES",
        "SHOW DATABASES",
        "SHOW COLUMNS FROM usage_events",
        "SHOW CREATE TABLE usage_events",
        "DESCRIBE usage_events",
        "EXPLAIN SELECT count() FROM usage_events",
        "SELECT name FROM system.tables WHERE database = currentDatabase()",
        "SELECT count() FROM information_schema.columns",
    ):
        answer = accounting.sql(admin_token, query)
        assert answer.status_code == 200, (query, answer.text)
        assert answer.json()["rows"], query


@pytest.mark.nats
@pytest.mark.chdb
async def test_a_slow_query_is_stopped_by_the_time_limit(module_dir: Path, bus, js, admin_token: str) -> None:
    service = AccountingProcess(
        module_dir / "limited", bus.url, {"AQUEDUCT_ACCOUNTING_SQL_MAX_SECONDS": "1"}
    ).start()
    try:
        answer = service.sql(admin_token, "SELECT count() FROM system.numbers WHERE number % 7 = 3")
        assert answer.status_code == 400
        assert "TIMEOUT_EXCEEDED" in answer.json()["detail"] or "Timeout" in answer.json()["detail"]
    finally:
        service.stop()


@pytest.mark.chdb
async def test_the_rules_alone_refuse_the_same(tmp_path: Path) -> None:
    """The same parse and checks on an analyst connection that the engine does not hold read-only."""
    writer = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    apply_migrations(writer, default_migrations_dir())
    writer.insert_json_rows("usage_events", [{"event_id": "e1", "occurred_at": "2026-01-01 00:00:00.000"}])
    canary = tmp_path / "canary.txt"
    canary.write_text("unchanged\n")
    limits = QueryLimits(max_rows=100).settings()
    analyst = AnalystQueries(AnalystEngine(ClickHouse(embedded_dsn(tmp_path / "chdb"), settings=limits)))
    reports = Reports(AsyncClickHouse(writer), analyst, sql_max_rows=100)
    try:
        tables_before = writer.query("SHOW TABLES").rows
        let_through = []
        for query in ESCAPES:
            try:
                await reports.sql(_fill(query, tmp_path))
            except (ReadOnlySqlError, ClickHouseError):
                continue
            let_through.append(query)

        assert not let_through
        assert writer.query("SHOW TABLES").rows == tables_before
        assert writer.query("SELECT count() FROM usage_events").rows == [[1]]
        assert canary.read_text() == "unchanged\n"
        assert not (tmp_path / "escape-target.txt").exists()
        for query, rows in ALLOWED:
            assert (await reports.sql(query)).rows == [list(r) for r in rows], query
    finally:
        analyst.close()
        writer.close()


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO usage_events (event_id) VALUES ('forged')",
        "insert into usage_events select * from usage_events",
        "WITH x AS (SELECT 1) INSERT INTO usage_events (event_id) SELECT 'forged'",
    ],
)
@pytest.mark.chdb
async def test_a_write_is_refused_as_a_write(tmp_path: Path, query: str) -> None:
    """An analyst who tries an INSERT is told that only read-only queries run (the engine writes an INSERT
    ... VALUES back as ``FORMAT Values``: that is not what the analyst wrote, nor why it is refused)."""
    writer = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    apply_migrations(writer, default_migrations_dir())
    analyst = AnalystQueries(AnalystEngine(ClickHouse(embedded_dsn(tmp_path / "chdb"))))
    reports = Reports(AsyncClickHouse(writer), analyst, sql_max_rows=100)
    try:
        with pytest.raises(ReadOnlySqlError, match="only read-only queries are allowed"):
            await reports.sql(query)
        assert writer.query("SELECT count() FROM usage_events").rows == [[0]]
    finally:
        analyst.close()
        writer.close()


@pytest.mark.chdb
def test_the_engine_holds_the_analyst_connection_read_only_on_its_own(tmp_path: Path) -> None:
    """Without any of the rules: the analyst connection itself refuses every statement of a multi-statement
    string that writes, and carries the limits as its own settings, which no query can change."""
    writer = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    apply_migrations(writer, default_migrations_dir())
    analyst = AnalystEngine.read_only(
        embedded_dsn(tmp_path / "chdb"), QueryLimits(max_rows=123, max_bytes=4567, max_seconds=7)
    )
    try:
        settings = analyst.query(
            "SELECT name, value FROM system.settings WHERE name IN ('readonly', 'allow_ddl', "
            "'max_result_rows', 'max_result_bytes', 'max_execution_time', 'result_overflow_mode')"
        )
        assert dict(map(tuple, settings.rows)) == {
            "readonly": "1",
            "allow_ddl": "0",
            "max_result_rows": "123",
            "max_result_bytes": "4567",
            "max_execution_time": "7",
            "result_overflow_mode": "break",
        }
        for attack in (
            "SELECT 1; DROP TABLE usage_events",
            "SELECT 1; INSERT INTO usage_events (event_id) VALUES ('forged')",
            f"SELECT 1; INSERT INTO FUNCTION file('{tmp_path / 'owned'}', 'LineAsString') SELECT 'x'",
            "SELECT 1 SETTINGS readonly = 0",
            "SET readonly = 0",
        ):
            with pytest.raises(ClickHouseError):
                analyst.query(attack)
        assert ["usage_events"] in writer.query("SHOW TABLES").rows
        assert writer.query("SELECT count() FROM usage_events").rows == [[0]]
        assert not (tmp_path / "owned").exists()
        writer.execute("INSERT INTO usage_events (event_id) VALUES ('still-writable')")  # the writer is not
    finally:
        analyst.close()
        writer.close()
