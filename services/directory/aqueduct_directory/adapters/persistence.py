"""Where events are stored (SQLite by default, PostgreSQL by URL), and the relay's durable position."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

__all__ = ["PositionStore", "event_store_env", "open_position_store"]


def event_store_env(database_url: str | None, data_dir: Path) -> dict[str, str]:
    """The eventsourcing library's environment for the configured database."""
    if not database_url:
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{data_dir / 'directory.sqlite'}"
    url = urlparse(database_url)
    if url.scheme == "sqlite":
        path = database_url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("//") else path  # sqlite:////abs and sqlite:///rel both work
        if path not in (":memory:", "/:memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path if path != "/:memory:" else ":memory:",
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    if url.scheme in ("postgres", "postgresql"):
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "aqueduct",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
        }
    raise ValueError(f"unsupported AQUEDUCT_DIRECTORY_DATABASE_URL scheme {url.scheme!r}")


class PositionStore(Protocol):
    def get(self, name: str) -> int: ...

    def set(self, name: str, position: int) -> None: ...

    def close(self) -> None: ...


_DDL = "CREATE TABLE IF NOT EXISTS aqueduct_positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL)"


class SqlitePositionStore:
    """A table next to the events, so a copy of the database file carries the relay's progress."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute(_DDL)

    def get(self, name: str) -> int:
        row = self._db.execute("SELECT position FROM aqueduct_positions WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set(self, name: str, position: int) -> None:
        self._db.execute(
            "INSERT INTO aqueduct_positions (name, position) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET position = excluded.position",
            (name, position),
        )

    def close(self) -> None:
        self._db.close()


class PostgresPositionStore:
    def __init__(self, env: dict[str, str]) -> None:
        import psycopg

        self._db = psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=int(env["POSTGRES_PORT"]),
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            autocommit=True,
        )
        self._db.execute(_DDL)

    def get(self, name: str) -> int:
        row = self._db.execute("SELECT position FROM aqueduct_positions WHERE name = %s", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set(self, name: str, position: int) -> None:
        self._db.execute(
            "INSERT INTO aqueduct_positions (name, position) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (name, position),
        )

    def close(self) -> None:
        self._db.close()


def open_position_store(env: dict[str, str]) -> PositionStore:
    if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
        return PostgresPositionStore(env)
    return SqlitePositionStore(env["SQLITE_DBNAME"])
