"""ClickHouse access with one interface and two engines: chDB in-process (embedded default) and a
ClickHouse server through clickhouse-connect (scale-out). The SQL is the same for both.

Query parameters use ClickHouse's own ``{name:Type}`` placeholders, so values never get spliced into SQL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urlparse

import orjson

__all__ = [
    "AsyncClickHouse",
    "ChdbClickHouse",
    "ClickHouse",
    "ClickHouseError",
    "QueryResult",
    "ServerClickHouse",
    "open_clickhouse",
    "server_options",
]


T = TypeVar("T")


class ClickHouseError(Exception):
    """The engine refused or failed a statement (syntax, permissions, unknown table, ...)."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


class ClickHouse(Protocol):
    """What accounting needs from a ClickHouse engine. Methods block; callers run them off the loop."""

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def query(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult: ...

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str = "") -> None: ...

    def close(self) -> None: ...


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def _param_text(value: Any) -> str:
    """A parameter value in the text form chDB expects for ``{name:Type}`` (as clickhouse-client does):
    top-level strings in the escaped (TSV) form, values inside arrays quoted."""
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, list | tuple | set):
        return "[" + ",".join(_quote(v) if isinstance(v, str) else _param_text(v) for v in value) + "]"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(value)


def _settings_clause(settings: dict[str, Any] | None) -> str:
    if not settings:
        return ""
    return "\nSETTINGS " + ", ".join(
        f"{k}={_quote(v) if isinstance(v, str) else _param_text(v)}" for k, v in settings.items()
    )


class ChdbClickHouse:
    """chDB, file-backed. Only one process may open the folder, so all SQL goes through this service.

    One chDB connection per thread: a connection keeps the query parameters of the statement it runs, so
    two threads sharing one swap each other's parameters ("Substitution `lo` is not set"). Connections to
    the same folder share one engine and run in parallel safely.
    """

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._path = str(path)
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        self._session()  # opens the engine now: a folder another process holds fails here, at start

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            from chdb import session as chdb_session

            with self._lock:
                if self._closed:
                    raise ClickHouseError("the ClickHouse engine is closed")
                session = chdb_session.Session(self._path)
                self._sessions.append(session)
            self._local.session = session
        return session

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        text_params = {k: _param_text(v) for k, v in (params or {}).items()}
        try:
            self._session().query(sql, params=text_params or None)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def query(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        text_params = {k: _param_text(v) for k, v in (params or {}).items()}
        try:
            result = self._session().query(
                sql + _settings_clause(settings), "JSONCompact", params=text_params or None
            )
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        raw = result.bytes()
        if not raw:
            return QueryResult([], [])
        document = orjson.loads(raw)
        return QueryResult([c["name"] for c in document.get("meta", [])], document.get("data", []))

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str = "") -> None:
        if not rows:
            return
        # JSONEachRow takes a JSON array of objects as well. chDB keeps no insert dedup log;
        # uniqueness comes from the caller's id check.
        self.execute(f"INSERT INTO {table} FORMAT JSONEachRow\n{orjson.dumps(rows).decode()}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def server_options(url: str) -> dict[str, Any]:
    """Connection options from ``http(s)://user:pass@host:port/database``."""
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a ClickHouse URL looks like http://user:pass@host:8123/db, not {url!r}")
    secure = parts.scheme == "https"
    return {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "username": unquote(parts.username or "default"),
        "password": unquote(parts.password or ""),
        "database": parts.path.strip("/") or "default",
        "secure": secure,
        # One HTTP session per client would serialize concurrent queries; statements here are stateless.
        "autogenerate_session_id": False,
    }


class ServerClickHouse:
    """A ClickHouse server over HTTP (``http://user:pass@host:8123/db``) through clickhouse-connect."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        options = server_options(url)
        try:
            self._client = clickhouse_connect.get_client(**options)
        except Exception as exc:
            # The URL may hold a password: name only the host in the message.
            raise ClickHouseError(
                f"cannot use the ClickHouse server at {options['host']}:{options['port']}: {type(exc).__name__}"
            ) from exc

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=params or None)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def query(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        try:
            result = self._client.query(sql, parameters=params or None, settings=settings or None)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        return QueryResult(list(result.column_names), [list(row) for row in result.result_rows])

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str = "") -> None:
        if not rows:
            return
        body = orjson.dumps(rows)
        # On a (replicated) server a retried insert of the same batch is dropped by the server as well.
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        try:
            self._client.raw_insert(table, insert_block=body, fmt="JSONEachRow", settings=settings)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()


def open_clickhouse(url: str, data_dir: Path) -> ClickHouse:
    """Empty URL: chDB under ``<data_dir>/chdb``; otherwise the server at ``url``."""
    if url:
        return ServerClickHouse(url)
    return ChdbClickHouse(data_dir / "chdb")


class AsyncClickHouse:
    """Runs the blocking engine calls in a worker thread so the event loop keeps serving."""

    def __init__(self, engine: ClickHouse) -> None:
        self.engine = engine

    async def query(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        return await asyncio.to_thread(self.engine.query, sql, params, settings)

    async def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str = "") -> None:
        await asyncio.to_thread(self.engine.insert_json_rows, table, rows, dedup_token)

    async def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        await asyncio.to_thread(self.engine.execute, sql, params)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(engine, *args)`` in a worker thread: a blocking use case (repairs at start)."""
        return await asyncio.to_thread(work, self.engine, *args)
