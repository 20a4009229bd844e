"""Use case: count a batch of usage events exactly once.

At-least-once delivery means a batch may hold events already stored (redelivery after a crash between
insert and ack) or the same event twice. Dropping the ids already present before inserting keeps every
count exact without ``FINAL``; ReplacingMergeTree is the safety net behind it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.usage import token_classes, usage_row
from aqueduct_libs.events import UsageRecorded

__all__ = ["IngestResult", "UsageIngest"]

# A duplicate is the same event, so it has the same occurred_at: the time bounds let the primary key
# skip everything outside the batch's time span.
_EXISTING = """
SELECT event_id FROM usage_events
WHERE occurred_at >= {lo:DateTime64(3, 'UTC')} AND occurred_at <= {hi:DateTime64(3, 'UTC')}
  AND event_id IN {ids:Array(String)}
"""


@dataclass(frozen=True)
class IngestResult:
    inserted: int
    duplicates: int


class UsageIngest:
    def __init__(self, clickhouse: AsyncClickHouse, prices: PriceBook) -> None:
        self._ch = clickhouse
        self._prices = prices

    async def existing_ids(self, rows: list[dict[str, Any]]) -> set[str]:
        # "YYYY-MM-DD hh:mm:ss.mmm" sorts as text the way it sorts as time.
        times = [row["occurred_at"] for row in rows]
        result = await self._ch.query(
            _EXISTING, {"lo": min(times), "hi": max(times), "ids": [row["event_id"] for row in rows]}
        )
        return {row[0] for row in result.rows}

    async def ingest_rows(self, rows: list[dict[str, Any]]) -> IngestResult:
        """``rows`` as ``usage_row_from_json`` makes them; each gets its cost here."""
        if not rows:
            return IngestResult(0, 0)
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row["event_id"], row)
        existing = await self.existing_ids(list(unique.values()))
        fresh = [row for event_id, row in unique.items() if event_id not in existing]
        cost = self._prices.cost_of
        for row in fresh:
            row["cost_nanos"] = cost(row["model"], token_classes(row))
        if fresh:
            token = hashlib.sha256("\n".join(row["event_id"] for row in fresh).encode()).hexdigest()
            await self._ch.insert_json_rows("usage_events", fresh, dedup_token=token)
        return IngestResult(len(fresh), len(rows) - len(fresh))

    async def ingest(self, events: list[UsageRecorded]) -> IngestResult:
        return await self.ingest_rows([usage_row(event) for event in events])
