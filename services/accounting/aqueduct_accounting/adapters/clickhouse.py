"""ClickHouse access through clickhouse-connect: one adapter for chDB in-process (``chdb:///path``, the
embedded default) and a ClickHouse server (``http(s)://user:pass@host:port/db``). Every statement takes
the same code path for both; the DSN is the only difference.

Values are never spliced into SQL: statements use ClickHouse's ``{name:Type}`` placeholders and the
values travel as query parameters, which the engine binds (clickhouse-connect's server-side binding).
Rows are inserted as JSONEachRow through clickhouse-connect's ``raw_insert``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import orjson

__all__ = [
    "EMBEDDED_OPTIONS",
    "AsyncClickHouse",
    "ClickHouse",
    "ClickHouseError",
    "JsonStrings",
    "QueryResult",
    "StringArray",
    "clickhouse_dsn",
    "embedded_dsn",
    "open_clickhouse",
]


T = TypeVar("T")


class ClickHouseError(Exception):
    """The engine refused or failed a statement (syntax, permissions, unknown table, ...)."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


# What ClickHouse's quoted string literals escape, as clickhouse-connect escapes query parameters.
_ESCAPES = str.maketrans({c: "\\" + c for c in ("\\", "'", "`", "\t", "\n")})


class StringArray:
    """An ``Array(String)`` query parameter rendered at C speed: clickhouse-connect escapes a string value
    character by character in Python (4 µs an id: a duplicate check of 20,000 ids spent 80 ms there). The
    text is the same as clickhouse-connect's own (it passes values of a type it does not know as ``str()``)."""

    __slots__ = ("_values",)

    def __init__(self, values: list[str]) -> None:
        self._values = values

    def __str__(self) -> str:
        if not self._values:
            return "[]"
        return "['" + "', '".join(value.translate(_ESCAPES) for value in self._values) + "']"

    def __len__(self) -> int:
        return len(self._values)


class JsonStrings:
    """Many strings as one ``String`` query parameter holding a JSON array, which a statement reads with
    ``JSONExtract({name:String}, 'Array(String)')`` (exact for any text). The engine parses one string
    literal and one JSON document instead of an array literal of as many elements: a duplicate check of
    20,000 ids cost the engine about 70 ms of CPU as ``Array(String)``, about 20 as JSON. The text is
    escaped as clickhouse-connect escapes a string parameter (at C speed, like ``StringArray``)."""

    __slots__ = ("_values",)

    def __init__(self, values: list[str]) -> None:
        self._values = values

    def __str__(self) -> str:
        return orjson.dumps(self._values).decode().translate(_ESCAPES)

    def __len__(self) -> int:
        return len(self._values)


# The embedded engine's memory worker corrects its memory tracker from the process's resident size every
# 100 ms by default: about 2 ms of CPU per second, idle or not (4 µs an event at 500 events/s). Every 5 s
# is enough for one service's engine.
EMBEDDED_OPTIONS: dict[str, Any] = {"memory_worker_period_ms": 5000}


def embedded_dsn(folder: Path) -> str:
    """``chdb:///absolute/folder``."""
    return f"chdb://{folder.resolve()}"


def clickhouse_dsn(url: str, data_dir: Path) -> str:
    """The configured DSN, or chDB under ``<data_dir>/chdb`` when none is."""
    return url or embedded_dsn(data_dir / "chdb")


def _connect(dsn: str, engine_options: dict[str, Any], settings: dict[str, Any]) -> Any:
    """A clickhouse-connect client. ``engine_options`` go into the embedded engine's connection string
    (chDB applies them to that connection only); a server takes its equivalents from the user's profile.
    ``settings`` go with every statement."""
    import clickhouse_connect

    parts = urlparse(dsn)
    try:
        if parts.scheme == "chdb":
            Path(unquote(parts.path)).mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(
                dsn=dsn, chdb_options=engine_options or None, settings=settings or None
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a ClickHouse DSN looks like chdb:///folder or http://user:pass@host:8123/db")
        # One HTTP session per client would serialize concurrent queries; statements here are stateless.
        # The scheme is passed on: clickhouse-connect reads TLS from a DSN's port only (443, 8443), so an
        # https:// DSN on another port, or none, would otherwise send the password in clear text.
        return clickhouse_connect.get_client(
            dsn=dsn, interface=parts.scheme, settings=settings or None, autogenerate_session_id=False
        )
    except Exception as exc:
        # The DSN may hold a password: the message names the place and the failure, never the DSN.
        reason = str(exc)
        for secret in filter(None, {parts.password, unquote(parts.password or "")}):
            reason = reason.replace(secret, "***")
        where = parts.path if parts.scheme == "chdb" else f"{parts.hostname}:{parts.port or ''}"
        raise ClickHouseError(f"cannot use ClickHouse at {parts.scheme}://{where}: {reason}") from exc


def _no_thread_above_the_process() -> None:
    """chDB runs its memory worker threads at the highest CPU priority (nice -20) where it may (as root).
    In-process, in a service the launcher starts at a lower priority (``AQUEDUCT_BACKGROUND_NICE``), they
    would preempt the proxy on its core every time they wake: they get the process's own priority."""
    own = os.getpriority(os.PRIO_PROCESS, os.getpid())
    with contextlib.suppress(OSError):  # no /proc (not Linux): nothing to do
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
                if os.getpriority(os.PRIO_PROCESS, int(task.name)) < own:
                    os.setpriority(os.PRIO_PROCESS, int(task.name), own)


class ClickHouse:
    """One clickhouse-connect client per thread that uses the adapter (a client runs one statement at a
    time; chDB's clients to one folder share its engine and run in parallel). Methods block; callers run
    them off the loop (``AsyncClickHouse``).

    ``engine_options``: options of the embedded engine's connections (ignored by a server).
    ``settings``: ClickHouse settings sent with every statement of this adapter.
    """

    def __init__(
        self,
        dsn: str,
        engine_options: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.dsn = dsn
        self._options = dict(EMBEDDED_OPTIONS if engine_options is None else engine_options)
        self._settings = dict(settings or {})
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        # Connects now: a folder another process holds, or a server out of reach, fails here, at start.
        self.database: str = self._client().database or "default"
        if dsn.startswith("chdb:"):
            _no_thread_above_the_process()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                if self._closed:
                    raise ClickHouseError("the ClickHouse engine is closed")
            client = _connect(self.dsn, self._options, self._settings)
            with self._lock:
                if self._closed:
                    client.close()
                    raise ClickHouseError("the ClickHouse engine is closed")
                self._clients.append(client)
            self._local.client = client
        return client

    def execute(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> None:
        client = self._client()
        try:
            client.command(sql, parameters=params or None, settings=settings or None)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def query(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> QueryResult:
        """Rows as ClickHouse's JSONCompact gives them (dates as text, 64-bit integers as numbers)."""
        raw = self.raw_query(sql, params, settings, "JSONCompact")
        if not raw:
            return QueryResult([], [])
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ClickHouseError("the engine's answer is not JSON") from exc
        return QueryResult([c["name"] for c in document.get("meta", [])], document.get("data", []))

    def raw_query(
        self,
        sql: str,
        params: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        fmt: str | None = None,
    ) -> bytes:
        """The engine's answer as bytes; without ``fmt`` nothing is added to ``sql`` (TabSeparated)."""
        client = self._client()
        try:
            raw: bytes = client.raw_query(sql, parameters=params or None, settings=settings or None, fmt=fmt)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc
        return raw

    def insert_json_rows(self, table: str, rows: list[dict[str, Any]], dedup_token: str = "") -> None:
        """``rows`` (column name -> value; missing columns take their defaults) in one insert. With a
        token, a server drops a retried insert of the same batch (chDB keeps no insert dedup log for
        these tables; uniqueness comes from the caller's id check)."""
        if not rows:
            return
        client = self._client()
        settings = {"insert_deduplication_token": dedup_token} if dedup_token else None
        try:
            client.raw_insert(table, insert_block=orjson.dumps(rows), fmt="JSONEachRow", settings=settings)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def insert_json_lines(self, table: str, lines: bytes, settings: dict[str, Any] | None = None) -> None:
        """Rows already written as JSONEachRow (one object a line), in one insert."""
        client = self._client()
        try:
            client.raw_insert(table, insert_block=lines, fmt="JSONEachRow", settings=settings or None)
        except Exception as exc:
            raise ClickHouseError(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


def open_clickhouse(url: str, data_dir: Path) -> ClickHouse:
    """Empty URL: chDB under ``<data_dir>/chdb``; otherwise the DSN given (``chdb://`` or ``http(s)://``)."""
    return ClickHouse(clickhouse_dsn(url, data_dir))


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
