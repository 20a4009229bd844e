"""Use case: count a batch of usage events exactly once.

At-least-once delivery means a batch may hold events already stored (redelivery after a crash between
insert and ack) or the same event twice. Dropping the ids already present before inserting keeps every
count exact without ``FINAL``; ReplacingMergeTree is the safety net behind it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.usage import clickhouse_time, usage_row
from aqueduct_libs.events import UsageRecorded

__all__ = ["IngestResult", "UsageIngest"]

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

    async def existing_ids(self, events: list[UsageRecorded]) -> set[str]:
        # A duplicate is the same event, so it has the same occurred_at: the time bounds let the
        # primary key skip everything outside the batch's time span.
        lo = min(e.occurred_at for e in events) - timedelta(milliseconds=1)
        hi = max(e.occurred_at for e in events) + timedelta(milliseconds=1)
        result = await self._ch.query(
            _EXISTING,
            {"lo": clickhouse_time(lo), "hi": clickhouse_time(hi), "ids": [e.event_id for e in events]},
        )
        return {row[0] for row in result.rows}

    async def ingest(self, events: list[UsageRecorded]) -> IngestResult:
        if not events:
            return IngestResult(0, 0)
        unique: dict[str, UsageRecorded] = {}
        for event in events:
            unique.setdefault(event.event_id, event)
        existing = await self.existing_ids(list(unique.values()))
        fresh = [e for e in unique.values() if e.event_id not in existing]
        rows = [
            usage_row(e, self._prices.cost_nanos(e.model, e.input_tokens, e.output_tokens, e.cached_tokens))
            for e in fresh
        ]
        if rows:
            token = hashlib.sha256("\n".join(r["event_id"] for r in rows).encode()).hexdigest()
            await self._ch.insert_json_rows("usage_events", rows, dedup_token=token)
        return IngestResult(len(rows), len(events) - len(rows))
