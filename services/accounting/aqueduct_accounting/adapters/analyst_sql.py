"""The read-only path for ad-hoc SQL, apart from the engine accounting writes with.

One clickhouse-connect adapter (``adapters/clickhouse.py``) for both deployments; read-only is the
engine's job for the whole call, never text appended to a query:
- chDB (``chdb:///folder``): a connection of its own to the folder accounting writes, opened with
  ``readonly=1``, ``allow_ddl=0`` and the limits in its connection string (chDB applies them to that
  connection only; with ``readonly=1`` no query can change them).
- ClickHouse server: the ``analyst`` user (``infra/clickhouse-server/users.xml``: a read-only profile
  with the same limits as constraints).
The limits also go with every statement, as settings, on both.

Both parse the query with the engine's own parser the same way (``parse``), so the rules of
``domain/readonly_sql.py`` run identically in the embedded and the server deployment.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aqueduct_accounting.adapters.clickhouse import ClickHouse, ClickHouseError, QueryResult, clickhouse_dsn
from aqueduct_accounting.domain.readonly_sql import KNOWN_TABLE_FUNCTIONS, ParsedQuery

__all__ = [
    "READ_ONLY",
    "AnalystEngine",
    "AnalystQueries",
    "QueryLimits",
    "open_analyst",
]

# The embedded engine's read-only connection (a server's analyst profile holds the same).
READ_ONLY: dict[str, Any] = {"readonly": 1, "allow_ddl": 0, "allow_introspection_functions": 0}


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


class AnalystEngine:
    """The analyst's connection: ``query`` blocks; ``params`` bind ``{name:Type}`` placeholders."""

    def __init__(self, engine: ClickHouse) -> None:
        self._engine = engine
        self.database = engine.database

    @classmethod
    def read_only(cls, dsn: str, limits: QueryLimits) -> AnalystEngine:
        """A read-only connection to ``dsn`` carrying ``limits``."""
        return cls(ClickHouse(dsn, engine_options=READ_ONLY | limits.settings(), settings=limits.settings()))

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        return self._engine.query(sql, params)

    def explain_ast(self, statement: str) -> list[str]:
        """The lines of ``EXPLAIN AST <statement>``, with nothing added to the statement (no FORMAT, which
        would show up in the tree)."""
        return self._engine.raw_query(f"EXPLAIN AST {statement}").decode().rstrip("\n").split("\n")

    def close(self) -> None:
        self._engine.close()


def open_analyst(server_url: str, analyst_url: str, data_dir: Path, limits: QueryLimits) -> AnalystEngine:
    """The read-only engine next to ``open_clickhouse(server_url, data_dir)``: the same chDB folder, or
    the server's ``analyst`` user at ``analyst_url``."""
    dsn = analyst_url or clickhouse_dsn(server_url, data_dir)
    if urlparse(dsn).scheme != "chdb" and not analyst_url:
        raise ValueError(
            "with a ClickHouse server, set AQUEDUCT_ACCOUNTING_ANALYST_CLICKHOUSE_URL "
            "(the read-only `analyst` user of infra/clickhouse-server/users.xml)"
        )
    return AnalystEngine.read_only(dsn, limits)


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
