"""The read-only path for ad-hoc SQL, apart from the engine accounting writes with.

Read-only is the engine's job for the whole call, never text appended to a query:
- chDB: a connection of its own to the same folder, opened with ``readonly=1``, ``allow_ddl=0`` and the
  limits as connection settings (chDB applies them to that connection only; with ``readonly=1`` no query
  can change them back).
- ClickHouse server: clickhouse-connect as the ``analyst`` user (``infra/clickhouse-server/users.xml``:
  a read-only profile with the same limits as constraints), the limits sent as HTTP settings.

Both parse the query with the engine's own parser the same way (``parse``), so the rules of
``domain/readonly_sql.py`` run identically in the embedded and the server deployment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson

from aqueduct_accounting.adapters.clickhouse import ClickHouseError, QueryResult, server_options
from aqueduct_accounting.domain.readonly_sql import KNOWN_TABLE_FUNCTIONS, ParsedQuery

__all__ = [
    "AnalystEngine",
    "AnalystQueries",
    "ChdbAnalyst",
    "QueryLimits",
    "ServerAnalyst",
    "open_analyst",
]


@dataclass(frozen=True)
class QueryLimits:
    max_rows: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    max_seconds: int = 30

    def settings(self) -> dict[str, Any]:
        """Bounded answers and time, for every analyst call."""
        return {
            "max_result_rows": self.max_rows,
            "max_result_bytes": self.max_bytes,
            "result_overflow_mode": "break",
            "max_execution_time": self.max_seconds,
        }


class AnalystEngine(Protocol):
    """A read-only connection. ``query`` blocks; ``params`` bind ``{name:String}`` placeholders."""

    database: str

    def query(self, sql: str, params: dict[str, str] | None = None) -> QueryResult: ...

    def explain_ast(self, statement: str) -> list[str]:
        """The lines of ``EXPLAIN AST <statement>``, with nothing added to the statement."""
        ...

    def close(self) -> None: ...


def _escaped(value: str) -> str:
    # chDB takes parameter values in the escaped (TSV) text form, as clickhouse-client does.
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class ChdbAnalyst:
    """A read-only chDB connection to the folder the accounting engine writes."""

    database = "default"

    def __init__(self, path: Path, limits: QueryLimits) -> None:
        import chdb

        read_only = {"readonly": 1, "allow_ddl": 0, "allow_introspection_functions": 0}
        self._conn = chdb.connect(f"{path}?{urlencode({**read_only, **limits.settings()})}")

    def query(self, sql: str, params: dict[str, str] | None = None) -> QueryResult:
        text = {k: _escaped(v) for k, v in (params or {}).items()}
        try:
            raw = self._conn.query(sql, "JSONCompact", params=text or None).bytes()
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        if not raw:
            return QueryResult([], [])
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ClickHouseError("the engine's answer is not JSON") from exc
        return QueryResult([c["name"] for c in document.get("meta", [])], document.get("data", []))

    def explain_ast(self, statement: str) -> list[str]:
        return [str(row[0]) for row in self.query(f"EXPLAIN AST {statement}").rows]

    def close(self) -> None:
        self._conn.close()


class ServerAnalyst:
    """clickhouse-connect as the read-only ``analyst`` user; the limits go with every request.

    Read-only comes from the user's profile (``readonly=2``: settings within the profile's constraints
    may be sent, ``readonly`` itself and ``allow_ddl`` never change).

    ``client``: an existing clickhouse-connect client (tests reach chDB through clickhouse-connect's
    ``chdb://`` backend with it).
    """

    def __init__(self, url: str, limits: QueryLimits, client: Any = None) -> None:
        self._settings = limits.settings()
        if client is None:
            import clickhouse_connect

            options = server_options(url)
            self.database = options["database"]
            try:
                client = clickhouse_connect.get_client(**options)
            except Exception as exc:
                raise ClickHouseError(
                    f"cannot use the ClickHouse server at {options['host']}:{options['port']} "
                    f"as the analyst: {type(exc).__name__}"
                ) from exc
        else:
            self.database = "default"
        self._client = client

    def query(self, sql: str, params: dict[str, str] | None = None) -> QueryResult:
        try:
            result = self._client.query(sql, parameters=params or None, settings=self._settings)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        return QueryResult(list(result.column_names), [list(row) for row in result.result_rows])

    def explain_ast(self, statement: str) -> list[str]:
        # A raw query without format or settings: clickhouse-connect adds nothing to the text, so the
        # tree is the statement's alone (``query`` appends FORMAT, which would show up in the tree).
        try:
            raw = self._client.raw_query(f"EXPLAIN AST {statement}")
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        return raw.decode().rstrip("\n").split("\n")

    def close(self) -> None:
        self._client.close()


def open_analyst(server_url: str, analyst_url: str, data_dir: Path, limits: QueryLimits) -> AnalystEngine:
    """The read-only engine next to ``open_clickhouse(server_url, data_dir)``."""
    if server_url:
        if not analyst_url:
            raise ValueError(
                "with a ClickHouse server, set AQUEDUCT_ACCOUNTING_ANALYST_CLICKHOUSE_URL "
                "(the read-only `analyst` user of infra/clickhouse-server/users.xml)"
            )
        return ServerAnalyst(analyst_url, limits)
    return ChdbAnalyst(data_dir / "chdb", limits)


class AnalystQueries:
    """Parse with the engine, then run; blocking calls in a worker thread."""

    def __init__(self, engine: AnalystEngine) -> None:
        self.engine = engine
        self.database = engine.database
        self._table_functions: frozenset[str] | None = None

    def _parse(self, query: str) -> ParsedQuery:
        # The query travels as a parameter value, never as SQL text: nothing in it can run here.
        # formatQuery refuses several statements; its answer is the canonical text of the one statement.
        formatted = str(self.engine.query("SELECT formatQuery({q:String})", {"q": query}).rows[0][0])
        return ParsedQuery(formatted, self.engine.explain_ast(formatted))

    async def parse(self, query: str) -> ParsedQuery:
        return await asyncio.to_thread(self._parse, query)

    async def table_functions(self) -> frozenset[str]:
        if self._table_functions is None:
            try:
                found = await asyncio.to_thread(
                    self.engine.query, "SELECT lower(name) FROM system.table_functions"
                )
                self._table_functions = frozenset(str(row[0]) for row in found.rows)
            except ClickHouseError:
                # A server may hide system tables from the analyst: the built-in list still applies.
                self._table_functions = KNOWN_TABLE_FUNCTIONS
        return self._table_functions

    async def run(self, statement: str) -> QueryResult:
        return await asyncio.to_thread(self.engine.query, statement)

    def close(self) -> None:
        self.engine.close()
