"""Use case: count a batch of usage events exactly once.

At-least-once delivery means a batch may hold events already stored (redelivery after a crash between
insert and ack, a proxy's journal sent again) or the same event twice. Dropping the ids already present
before inserting keeps every count exact without ``FINAL``; ReplacingMergeTree is the safety net behind it.

Which ids are present is answered without a query for recent events (``domain.recent_ids``: every id
stored in the last ``window`` seconds of ``occurred_at``, loaded from the table at start and kept up to
date by every insert), and by a query bounded by the events' time span and orgs for older ones. After an
insert that failed (it may have landed all the same), the next batch is checked against the table in full.

Each insert's rows carry its ``recorded_at`` from ``StoreClock`` (strictly increasing), which roll-ups
(``application.rollups``) rely on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, JsonStrings, StringArray
from aqueduct_accounting.application.rollups import LATEST_MARK, StoreClock
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.recent_ids import RecentIds, next_second
from aqueduct_accounting.domain.usage import clickhouse_time, row_cost, usage_row
from aqueduct_libs.events import UsageRecorded

__all__ = ["IngestResult", "UsageIngest"]

# A duplicate is the same event, so it has the same occurred_at and org: the time bounds and orgs let the
# primary key (hour, org_id, event_id) skip everything else. The ids travel as one JSON text
# (``JsonStrings``): a third of the engine's CPU of an array literal of as many elements.
_EXISTING = """
SELECT event_id FROM usage_events
WHERE occurred_at >= {lo:DateTime64(3, 'UTC')} AND occurred_at <= {hi:DateTime64(3, 'UTC')}
  AND org_id IN {orgs:Array(String)}
  AND event_id IN (SELECT arrayJoin(JSONExtract({ids:String}, 'Array(String)')))
"""

# Where the store clock starts: the latest insert's stamp and the latest roll-up mark.
_LATEST_RECORDED = f"SELECT toUnixTimestamp64Milli(max(recorded_at)), ({LATEST_MARK}) FROM usage_events"

_RECENT = """
SELECT event_id, occurred_at FROM usage_events
WHERE occurred_at >= {since:DateTime64(3, 'UTC')}
ORDER BY occurred_at DESC
LIMIT {limit:UInt64}
"""


@dataclass(frozen=True)
class IngestResult:
    inserted: int
    duplicates: int
    stored: list[dict[str, Any]] = field(default_factory=list)  # the rows inserted, with their cost


class UsageIngest:
    def __init__(
        self,
        clickhouse: AsyncClickHouse,
        prices: PriceBook,
        *,
        window_seconds: float = 120.0,
        max_recent_ids: int = 500_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ch = clickhouse
        self._prices = prices
        self._window = timedelta(seconds=window_seconds)
        self._max_recent = max_recent_ids
        self._clock = clock
        self._recent = RecentIds(max_recent_ids)
        self.store_clock = StoreClock()
        self._started = False
        # An insert raised: it may have landed all the same (a server that timed out), so the next batch
        # (the same events, retried) is checked against the table, not the set.
        self._unsure = True

    async def start(self) -> int:
        """Load the ids stored in the last ``window`` seconds; returns how many."""
        recorded, mark = (await self._ch.query(_LATEST_RECORDED)).rows[0]
        self.store_clock.start(int(recorded or 0), int(mark or 0))
        since = clickhouse_time(self._clock() - self._window)[:19]
        result = await self._ch.query(_RECENT, {"since": since, "limit": self._max_recent})
        stored = [(str(event_id), str(occurred_at)) for event_id, occurred_at in result.rows]
        # Cut short by the limit: only the seconds loaded in full are covered.
        self._recent.start(since, stored)
        if len(stored) >= self._max_recent:
            self._recent.advance(next_second(stored[-1][1][:19]))
        self._started = True
        self._unsure = False
        return len(self._recent)

    async def ready(self) -> None:
        """Started (``start``) if not yet."""
        if not self._started:
            await self.start()

    def stored_recently(self, event_id: str, occurred_at: str) -> bool:
        """Whether the event is known stored without a query (only for events of the recent window)."""
        return (
            not self._unsure
            and self._recent.covers(occurred_at)
            and self._recent.contains(event_id, occurred_at)
        )

    async def existing_ids(self, rows: list[dict[str, Any]]) -> set[str]:
        """The ids of ``rows`` present in ``usage_events`` (one query)."""
        # "YYYY-MM-DD hh:mm:ss.mmm" sorts as text the way it sorts as time.
        times = [row["occurred_at"] for row in rows]
        result = await self._ch.query(
            _EXISTING,
            {
                "lo": min(times),
                "hi": max(times),
                "orgs": StringArray(sorted({row["org_id"] for row in rows})),
                "ids": JsonStrings([row["event_id"] for row in rows]),
            },
        )
        return {row[0] for row in result.rows}

    async def _stored_already(self, rows: list[dict[str, Any]]) -> set[str]:
        await self.ready()
        self._recent.advance(clickhouse_time(self._clock() - self._window))
        if self._unsure:
            return await self.existing_ids(rows)
        recent = self._recent
        found: set[str] = set()
        older: list[dict[str, Any]] = []
        for row in rows:
            if recent.covers(row["occurred_at"]):
                if recent.contains(row["event_id"], row["occurred_at"]):
                    found.add(row["event_id"])
            else:
                older.append(row)
        if older:
            found |= await self.existing_ids(older)
        return found

    async def ingest_rows(self, rows: list[dict[str, Any]]) -> IngestResult:
        """``rows`` as ``usage_row_from_json`` makes them; each without a ``cost_nanos`` gets its cost here."""
        if not rows:
            return IngestResult(0, 0)
        unique: dict[str, dict[str, Any]] = {}
        for row in rows:
            unique.setdefault(row["event_id"], row)
        existing = await self._stored_already(list(unique.values()))
        fresh = [row for event_id, row in unique.items() if event_id not in existing]
        prices = self._prices
        for row in fresh:
            if "cost_nanos" not in row:  # not priced when it was read
                row["cost_nanos"] = row_cost(prices, row)
        if fresh:
            token = hashlib.sha256("\n".join(row["event_id"] for row in fresh).encode()).hexdigest()
            stamp = self.store_clock.stamp()
            recorded_at = clickhouse_time(datetime.fromtimestamp(stamp / 1000, UTC))
            for row in fresh:
                row["recorded_at"] = recorded_at
            try:
                await self._ch.insert_json_rows("usage_events", fresh, dedup_token=token)
            except BaseException:
                self._unsure = True
                self.store_clock.failed(stamp)
                raise
            self.store_clock.finished(stamp)
        # Every one of them is stored now (the ones found present as well: after an unsure insert, those
        # may be new to the set).
        self._recent.add((row["event_id"], row["occurred_at"]) for row in unique.values())
        self._unsure = False
        return IngestResult(len(fresh), len(rows) - len(fresh), fresh)

    async def ingest(self, events: list[UsageRecorded]) -> IngestResult:
        return await self.ingest_rows([usage_row(event) for event in events])
