"""Use case: at start, bring ClickHouse back to what the streams say, whatever was lost.

Migrations (``adapters.migrations``) create what is missing, even tables their record says exist. A table
created in this start that holds a copy of a stream is refilled by replaying that stream from its start:
its durable consumer is deleted, and is created again (delivering everything) when the consumers start.
Replays are exact because every store drops what it already holds (``event_id``, ``notification_id``).
The roll-ups follow the usage table: emptied when it is refilled. Empty roll-ups (the table lost alone,
or emptied) need nothing more: every event is in the roll-up views' tail until the next roll-ups have
covered it again (``application.rollups``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from aqueduct_accounting.adapters.clickhouse import ClickHouse
from aqueduct_accounting.adapters.migrations import apply_migrations, existing_tables, repair_missing
from aqueduct_accounting.application.rollups import TOTALS_TABLE

__all__ = ["SchemaRepair", "migrate_and_repair"]

log = logging.getLogger(__name__)

USAGE_TABLE = "usage_events"
DIRECTORY_TABLE = "directory_events"


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
        if TOTALS_TABLE in before:
            engine.execute(f"TRUNCATE TABLE IF EXISTS {TOTALS_TABLE}")
    return repair
