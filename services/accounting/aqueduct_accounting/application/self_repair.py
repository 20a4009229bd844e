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

from aqueduct_accounting.adapters.clickhouse import ClickHouse, ClickHouseError
from aqueduct_accounting.adapters.migrations import apply_migrations, existing_tables, repair_missing
from aqueduct_accounting.application.rollups import TOTALS_TABLE

__all__ = ["MERGE_SELECTOR_BASE", "SchemaRepair", "merge_less_often", "migrate_and_repair"]

log = logging.getLogger(__name__)

USAGE_TABLE = "usage_events"
DIRECTORY_TABLE = "directory_events"

# The engine's merge policy for usage_events (``merge_selector_base``, 5 by default): how many parts of
# like size a merge waits for. The selector counts every part as at least 5 MiB, so while a month's
# partition is smaller than that (its first few hundred thousand events) the default merges the whole
# partition again after every fifth insert: at a steady stream of one insert a second, about 0.4 µs of
# CPU per stored row every five seconds (after 160,000 events, 60 ms per merge: 170 to 230 CPU-µs per
# event at 500 events/s, against about 40 before them). At 20, a small partition is merged again after
# about 24 inserts, larger ones as before with a little more parts waiting (bench/clickhouse_merges.py).
MERGE_SELECTOR_BASE = 20.0


@dataclass
class SchemaRepair:
    created: list[str] = field(default_factory=list)  # tables and views that did not exist at start
    replay_usage: bool = False  # refill usage_events from the USAGE stream
    replay_directory: bool = False  # refill directory_events from the DIRECTORY stream


def merge_less_often(engine: ClickHouse, base: float | None = MERGE_SELECTOR_BASE) -> bool:
    """Set usage_events' ``merge_selector_base`` (a table setting, kept by the engine; ``None``: back to
    the engine's default); False, and the engine's default kept, where the engine does not know it (a
    ClickHouse server older than the setting)."""
    if base is None:
        statement = f"ALTER TABLE {USAGE_TABLE} RESET SETTING merge_selector_base"
    else:
        statement = f"ALTER TABLE {USAGE_TABLE} MODIFY SETTING merge_selector_base = {float(base)!r}"
    try:
        engine.execute(statement)
    except ClickHouseError as exc:
        log.warning("usage_events keeps the engine's merge policy (merge_selector_base not set: %s)", exc)
        return False
    return True


def migrate_and_repair(
    engine: ClickHouse, folder: Path, merge_selector_base: float | None = MERGE_SELECTOR_BASE
) -> SchemaRepair:
    """Migrations, then whatever table is missing created again, then the merge policy (``None``: the
    engine's own)."""
    before = existing_tables(engine)
    apply_migrations(engine, folder)
    repair_missing(engine, folder)
    merge_less_often(engine, merge_selector_base)
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
