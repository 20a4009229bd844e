"""Use case: at start, move usage rows stored out of bounds (by a version that did not check them: a
status code stored as 4464, a cost wrapped negative, a date before 1970) to the dead-letter stream.

Such a row breaks what is derived from it (a negative cost silences budgets; a date before 1970 cannot be
bucketed and stopped the roll-up repair at every start). Each becomes a dead letter holding the row as a
usage event, with the reason, and is deleted; the roll-ups are then rebuilt from the rows that remain.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse
from aqueduct_accounting.adapters.dead_letters import DeadLetters
from aqueduct_accounting.application.rollups import TOTALS_TABLE
from aqueduct_accounting.domain.usage import (
    TOKEN_COUNTS,
    InvalidUsageEventError,
    check_stored_row,
    clickhouse_time,
)
from aqueduct_libs import bounds, names
from aqueduct_libs.events import DeadLetter

__all__ = ["quarantine_out_of_bounds"]

log = logging.getLogger(__name__)

_COUNTS = TOKEN_COUNTS
_OUT_OF_BOUNDS = (
    "SELECT * FROM usage_events WHERE occurred_at < {earliest:DateTime64(3, 'UTC')} "
    "OR occurred_at > {latest:DateTime64(3, 'UTC')} OR status_code < {min_status:UInt16} "
    "OR status_code > {max_status:UInt16} OR cost_nanos < 0 OR cost_nanos > {max_cost:Int64} "
    + "".join(f"OR {c} > {{max_tokens:UInt64}} " for c in _COUNTS)
    + "LIMIT 10000"
)


async def quarantine_out_of_bounds(clickhouse: AsyncClickHouse, letters: DeadLetters, consumer: str) -> int:
    """Dead-letter and delete the rows out of bounds (10,000 a start at most); return how many."""
    now = datetime.now(UTC)
    found = await clickhouse.query(
        _OUT_OF_BOUNDS,
        {
            "earliest": clickhouse_time(bounds.EARLIEST_OCCURRED_AT),
            "latest": clickhouse_time(now + bounds.MAX_FUTURE_SKEW),
            "min_status": bounds.MIN_STATUS_CODE,
            "max_status": bounds.MAX_STATUS_CODE,
            "max_cost": bounds.MAX_EVENT_COST_NANOS,
            "max_tokens": bounds.MAX_TOKENS,
        },
    )
    if not found.rows:
        return 0
    ids: list[str] = []
    for values in found.rows:
        row: dict[str, Any] = dict(zip(found.columns, values, strict=True))
        for column in (*_COUNTS, "status_code", "cost_nanos"):  # 64-bit integers come quoted in JSON
            row[column] = int(row[column])
        event_id = str(row["event_id"])
        await letters.send(
            DeadLetter(
                source_stream=names.USAGE_STREAM,
                source_subject=names.USAGE_SUBJECT,
                source_sequence=0,
                consumer=consumer,
                reason=f"stored out of bounds before accounting checked them: {_problem(row)}",
                failed_at=now,
                payload=_as_event(row),
            ),
            key="stored-" + hashlib.sha256(event_id.encode()).hexdigest()[:24],
        )
        ids.append(event_id)
    await clickhouse.execute(
        "ALTER TABLE usage_events DELETE WHERE event_id IN {ids:Array(String)} SETTINGS mutations_sync = 2",
        {"ids": ids},
    )
    # The roll-ups counted those rows (in buckets that may not even be their hour): emptied, every event
    # is in the views' tail until rolled up again (application.rollups).
    await clickhouse.execute(f"TRUNCATE TABLE IF EXISTS {TOTALS_TABLE}")
    log.warning("%d usage rows out of bounds moved to the dead-letter stream; roll-ups rebuilt", len(ids))
    return len(ids)


def _problem(row: dict[str, Any]) -> str:
    cost = int(row.get("cost_nanos") or 0)
    if not 0 <= cost <= bounds.MAX_EVENT_COST_NANOS:
        return f"cost_nanos {cost} is outside 0..{bounds.MAX_EVENT_COST_NANOS}"
    try:
        check_stored_row(row)
    except InvalidUsageEventError as exc:
        return str(exc)
    return "out of bounds"


def _as_event(row: dict[str, Any]) -> str:
    event = {k: v for k, v in row.items() if k not in ("recorded_at", "cost_nanos")}
    event["occurred_at"] = str(row["occurred_at"]).replace(" ", "T") + "+00:00"
    event["schema_version"] = 1
    return orjson.dumps(event).decode()
