"""The auth service's own database: local accounts, sessions, refresh tokens and one-time codes.

SQLite by default (``<data_dir>/auth/auth.sqlite``), PostgreSQL by URL. Token values never reach it:
refresh tokens and one-time codes are stored as keyed hashes. Spending a token or code is one
conditional UPDATE, so two concurrent uses of the same value cannot both succeed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AuthStore", "LocalAccount", "StoredToken"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS local_accounts (
        username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, admin INTEGER NOT NULL,
        email TEXT NOT NULL, name TEXT NOT NULL, groups_json TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL)""",
    # Added later: an account whose password was set by an Admin must choose its own at first sign-in.
    "ALTER TABLE local_accounts ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY, sign_in_json TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS refresh_tokens (
        token_hash TEXT PRIMARY KEY, session_id TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, used_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS refresh_tokens_session ON refresh_tokens (session_id)",
    """CREATE TABLE IF NOT EXISTS exchange_codes (
        code_hash TEXT PRIMARY KEY, session_id TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL, used_at DOUBLE PRECISION)""",
    # The browser a single sign-on code belongs to: the hash of a secret only that browser holds.
    """CREATE TABLE IF NOT EXISTS exchange_code_bindings (
        code_hash TEXT PRIMARY KEY, binding TEXT NOT NULL)""",
    # A single sign-on session's address at the identity provider that ends the provider's session too.
    """CREATE TABLE IF NOT EXISTS end_session_urls (
        session_id TEXT PRIMARY KEY, url TEXT NOT NULL)""",
]


@dataclass(frozen=True)
class LocalAccount:
    username: str
    password_hash: str
    admin: bool = False
    email: str = ""
    name: str = ""
    groups: list[str] = field(default_factory=list)
    must_change_password: bool = False


@dataclass(frozen=True)
class StoredToken:
    """A refresh token or one-time code, looked up by its hash."""

    session_id: str
    expires_at: float
    used_at: float | None
    session_revoked: bool
    sign_in: dict[str, Any]


class AuthStore:
    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg

            self._conn: Any = psycopg.connect(url, autocommit=True)
            self._param = "%s"
        else:
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._param = "?"
        for statement in _SCHEMA:
            if statement.startswith("ALTER TABLE") and self._has_column(statement):
                continue
            self._execute(statement)

    def _has_column(self, alter: str) -> bool:
        """``ALTER TABLE t ADD COLUMN c ...`` already applied (SQLite has no ``IF NOT EXISTS`` there)."""
        words = alter.split()
        table, column = words[2], words[5]
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute(f"SELECT * FROM {table} LIMIT 0")  # names from _SCHEMA only
            names = [d[0] for d in cursor.description]
        return column in names

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute(sql.replace("?", self._param), params)
            return cursor

    def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute(sql.replace("?", self._param), params)
            return cursor.fetchone()

    # Local accounts

    def add_account(self, account: LocalAccount, now: float) -> bool:
        """Insert; False when the username is taken."""
        cursor = self._execute(
            "INSERT INTO local_accounts"
            " (username, password_hash, admin, email, name, groups_json, created_at, must_change_password)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO NOTHING",
            (
                account.username,
                account.password_hash,
                int(account.admin),
                account.email,
                account.name,
                json.dumps(account.groups),
                now,
                int(account.must_change_password),
            ),
        )
        return bool(cursor.rowcount == 1)

    _ACCOUNT_COLUMNS = "username, password_hash, admin, email, name, groups_json, must_change_password"

    @staticmethod
    def _account(row: tuple[Any, ...]) -> LocalAccount:
        return LocalAccount(row[0], row[1], bool(row[2]), row[3], row[4], json.loads(row[5]), bool(row[6]))

    def get_account(self, username: str) -> LocalAccount | None:
        row = self._one(f"SELECT {self._ACCOUNT_COLUMNS} FROM local_accounts WHERE username = ?", (username,))
        return None if row is None else self._account(row)

    def list_accounts(self) -> list[LocalAccount]:
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute(f"SELECT {self._ACCOUNT_COLUMNS} FROM local_accounts ORDER BY username")
            rows = cursor.fetchall()
        return [self._account(row) for row in rows]

    def set_password_hash(self, username: str, password_hash: str, must_change: bool | None = None) -> bool:
        """False when there is no such account. ``must_change`` None leaves the flag as it is."""
        if must_change is None:
            cursor = self._execute(
                "UPDATE local_accounts SET password_hash = ? WHERE username = ?", (password_hash, username)
            )
        else:
            cursor = self._execute(
                "UPDATE local_accounts SET password_hash = ?, must_change_password = ? WHERE username = ?",
                (password_hash, int(must_change), username),
            )
        return bool(cursor.rowcount == 1)

    # Sessions and their refresh tokens

    def add_session(self, session_id: str, sign_in: dict[str, Any], now: float) -> None:
        self._execute(
            "INSERT INTO sessions (session_id, sign_in_json, created_at) VALUES (?, ?, ?)",
            (session_id, json.dumps(sign_in), now),
        )

    def add_end_session_url(self, session_id: str, url: str) -> None:
        self._execute("INSERT INTO end_session_urls (session_id, url) VALUES (?, ?)", (session_id, url))

    def take_end_session_url(self, session_id: str) -> str:
        """The session's end-session address at its identity provider, once (empty if none)."""
        row = self._one("SELECT url FROM end_session_urls WHERE session_id = ?", (session_id,))
        self._execute("DELETE FROM end_session_urls WHERE session_id = ?", (session_id,))
        return str(row[0]) if row else ""

    def revoke_session(self, session_id: str, now: float) -> None:
        self._execute(
            "UPDATE sessions SET revoked_at = ? WHERE session_id = ? AND revoked_at IS NULL",
            (now, session_id),
        )

    def add_refresh_token(self, token_hash: str, session_id: str, expires_at: float) -> None:
        self._execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES (?, ?, ?)",
            (token_hash, session_id, expires_at),
        )

    def find_refresh_token(self, token_hash: str) -> StoredToken | None:
        return self._find("refresh_tokens", "token_hash", token_hash)

    def spend_refresh_token(self, token_hash: str, now: float) -> bool:
        """Mark used; True only for the one caller that spent it."""
        return self._spend("refresh_tokens", "token_hash", token_hash, now)

    def add_exchange_code(self, code_hash: str, session_id: str, expires_at: float, binding: str) -> None:
        self._execute(
            "INSERT INTO exchange_code_bindings (code_hash, binding) VALUES (?, ?)", (code_hash, binding)
        )
        self._execute(
            "INSERT INTO exchange_codes (code_hash, session_id, expires_at) VALUES (?, ?, ?)",
            (code_hash, session_id, expires_at),
        )

    def exchange_code_binding(self, code_hash: str) -> str | None:
        row = self._one("SELECT binding FROM exchange_code_bindings WHERE code_hash = ?", (code_hash,))
        return None if row is None else str(row[0])

    def find_exchange_code(self, code_hash: str) -> StoredToken | None:
        return self._find("exchange_codes", "code_hash", code_hash)

    def spend_exchange_code(self, code_hash: str, now: float) -> bool:
        return self._spend("exchange_codes", "code_hash", code_hash, now)

    def purge_expired(self, now: float, keep_seconds: float = 24 * 3600) -> None:
        """Forget expired tokens and codes, and sessions that nothing can resume any more.

        Spent tokens are kept until they expire: a spent token seen again is how theft is detected.
        """
        self._execute("DELETE FROM refresh_tokens WHERE expires_at < ?", (now,))
        self._execute("DELETE FROM exchange_codes WHERE expires_at < ?", (now,))
        self._execute(
            "DELETE FROM exchange_code_bindings WHERE code_hash NOT IN (SELECT code_hash FROM exchange_codes)"
        )
        self._execute(
            "DELETE FROM sessions WHERE created_at < ? AND (revoked_at IS NOT NULL OR ("
            " session_id NOT IN (SELECT session_id FROM refresh_tokens)"
            " AND session_id NOT IN (SELECT session_id FROM exchange_codes)))",
            (now - keep_seconds,),
        )
        self._execute(
            "DELETE FROM end_session_urls WHERE session_id NOT IN (SELECT session_id FROM sessions)"
        )

    def _find(self, table: str, column: str, value: str) -> StoredToken | None:
        row = self._one(
            f"SELECT t.session_id, t.expires_at, t.used_at, s.revoked_at, s.sign_in_json FROM {table} t"
            f" JOIN sessions s ON s.session_id = t.session_id WHERE t.{column} = ?",
            (value,),
        )
        if row is None:
            return None
        return StoredToken(row[0], row[1], row[2], row[3] is not None, json.loads(row[4]))

    def _spend(self, table: str, column: str, value: str, now: float) -> bool:
        cursor = self._execute(
            f"UPDATE {table} SET used_at = ? WHERE {column} = ? AND used_at IS NULL", (now, value)
        )
        return bool(cursor.rowcount == 1)
