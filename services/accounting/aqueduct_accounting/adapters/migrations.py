"""Versioned ClickHouse migrations: ``infra/clickhouse/NNNN_name.sql``, applied in order at start.

Applied versions are recorded in ``schema_migrations``. Statements are idempotent (``IF NOT EXISTS``), so
a migration interrupted half-way by a crash simply runs again.

The record is not trusted alone: ``repair_missing`` then checks that every table and view the applied
migrations create exists, and runs again the statements that create (or alter) any that is gone, so a
dropped table never stops the service from starting. What is lost with it is rebuilt by the caller.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aqueduct_accounting.adapters.clickhouse import ClickHouse

__all__ = [
    "Migration",
    "apply_migrations",
    "existing_tables",
    "expected_tables",
    "load_migrations",
    "repair_missing",
    "split_statements",
]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")
_CREATES = re.compile(
    r"^\s*CREATE\s+(?:TABLE|MATERIALIZED\s+VIEW|VIEW|DICTIONARY)\s+IF\s+NOT\s+EXISTS\s+`?(\w+)`?", re.I
)
_ALTERS = re.compile(r"^\s*ALTER\s+TABLE\s+`?(\w+)`?", re.I)

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version String,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    statements: list[str]


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` at the end of a line, dropping comment-only chunks (our DDL has no such strings)."""
    statements = []
    for chunk in re.split(r";\s*(?:\n|$)", sql):
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
        if body:
            statements.append(body)
    return statements


def load_migrations(folder: Path) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(match.group(1), path.name, split_statements(path.read_text())))
    if not found:
        raise FileNotFoundError(f"no ClickHouse migrations in {folder}")
    return found


def apply_migrations(engine: ClickHouse, folder: Path) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied now."""
    engine.execute(_CREATE_LEDGER)
    done = {row[0] for row in engine.query("SELECT version FROM schema_migrations").rows}
    applied = []
    for migration in load_migrations(folder):
        if migration.version in done:
            continue
        for statement in migration.statements:
            engine.execute(statement)
        engine.execute(
            "INSERT INTO schema_migrations (version, name) SELECT {v:String}, {n:String}",
            {"v": migration.version, "n": migration.name},
        )
        log.info("applied ClickHouse migration %s", migration.name)
        applied.append(migration.version)
    return applied


def existing_tables(engine: ClickHouse) -> set[str]:
    """Tables and views of the current database."""
    rows = engine.query("SELECT name FROM system.tables WHERE database = currentDatabase()").rows
    return {str(row[0]) for row in rows}


def expected_tables(folder: Path) -> set[str]:
    """Every table and view the migrations create."""
    return {
        match.group(1)
        for migration in load_migrations(folder)
        for statement in migration.statements
        if (match := _CREATES.match(statement))
    }


def _target(statement: str) -> str | None:
    match = _CREATES.match(statement) or _ALTERS.match(statement)
    return match.group(1) if match else None


def repair_missing(engine: ClickHouse, folder: Path) -> list[str]:
    """Recreate the tables and views of applied migrations that are gone; return their names.

    Only the last statement that creates a missing object runs again, then those that alter it, in
    migration order (a column added by a later migration is added again); other statements (backfills,
    drops) never run twice.
    """
    done = {row[0] for row in engine.query("SELECT version FROM schema_migrations").rows}
    applied = [m for m in load_migrations(folder) if m.version in done]
    present = existing_tables(engine)
    missing = {
        name
        for migration in applied
        for statement in migration.statements
        if (match := _CREATES.match(statement)) and (name := match.group(1)) not in present
    }
    if not missing:
        return []
    log.warning(
        "ClickHouse objects missing although migrated: %s; recreating them", ", ".join(sorted(missing))
    )
    statements = [statement for migration in applied for statement in migration.statements]
    # A later migration may replace an object (drop it, create it anew): only its last definition counts,
    # with the alterations that follow it.
    last_create = {
        name: index
        for index, statement in enumerate(statements)
        if (match := _CREATES.match(statement)) and (name := match.group(1)) in missing
    }
    for index, statement in enumerate(statements):
        target = _target(statement)
        if target in last_create and index >= last_create[target]:
            engine.execute(statement)
    return sorted(missing)
