"""Use case: at start, bring ClickHouse back to what the streams say, whatever was lost.

Migrations (``adapters.migrations``) create what is missing, even tables their record says exist. A table
created in this start that holds a copy of a stream is refilled by replaying that stream from its start:
its durable consumer is deleted, and is created again (delivering everything) when the consumers start.
Replays are exact because every store drops what it already holds (``event_id``, ``notification_id``).
The roll-ups follow the usage table: emptied when it is refilled (the replay rebuilds them through the
materialized views), rebuilt from it when one of them (or its view) was lost alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aqueduct_accounting.adapters.clickhouse import ClickHouse
from aqueduct_accounting.adapters.migrations import apply_migrations, existing_tables, repair_missing
from aqueduct_accounting.application.rollups import repair_rollups

__all__ = ["SchemaRepair", "migrate_and_repair"]

log = logging.getLogger(__name__)

USAGE_TABLE = "usage_events"
DIRECTORY_TABLE = "directory_events"
ROLLUP_PREFIX = "usage_by_"


@dataclass
class SchemaRepair:
    created: list[str] = field(default_factory=list)  # tables and views that did not exist at start
    replay_usage: bool = False  # refill usage_events from the USAGE stream
    replay_directory: bool = False  # refill directory_events from the DIRECTORY stream


def migrate_and_repair(engine: ClickHouse, folder: Path) -> SchemaRepair:
    before = existing_tables(engine)
    apply_migrations(engine, folder)
    repair_missing(engine, folder)
    created = sorted(existing_tables(engine) - before)
    repair = SchemaRepair(created)
    if not created:
        return repair
    log.warning("ClickHouse tables created at this start: %s", ", ".join(created))
    repair.replay_directory = DIRECTORY_TABLE in created
    if USAGE_TABLE in created:
        repair.replay_usage = True
        # The roll-ups still count the lost events: empty them, the replay counts everything again.
        for table in sorted(before):
            if table.startswith(ROLLUP_PREFIX) and not table.endswith("_mv"):
                engine.execute(f"TRUNCATE TABLE IF EXISTS {table}")
    elif any(name.startswith(ROLLUP_PREFIX) for name in created) and USAGE_TABLE in before:
        # A roll-up or its view was lost alone: rebuild every hour from the raw events.
        rebuilt = repair_rollups(engine, recorded_since=datetime(1970, 1, 1, tzinfo=UTC))
        log.warning("roll-ups rebuilt from usage_events: %d ranges", len(rebuilt))
    return repair
