"""Use case: mirror the directory's integration events into ``directory_events`` for audit SQL, once each."""

from __future__ import annotations

import json

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse
from aqueduct_accounting.domain.usage import clickhouse_time
from aqueduct_libs.events import DirectoryEvent

__all__ = ["DirectoryMirror"]

_EXISTING = "SELECT notification_id FROM directory_events WHERE notification_id IN {ids:Array(UInt64)}"


class DirectoryMirror:
    def __init__(self, clickhouse: AsyncClickHouse) -> None:
        self._ch = clickhouse

    async def store(self, events: list[DirectoryEvent]) -> int:
        """Insert the events not yet mirrored; return how many were new."""
        unique = {e.notification_id: e for e in events}
        if not unique:
            return 0
        existing = {int(row[0]) for row in (await self._ch.query(_EXISTING, {"ids": list(unique)})).rows}
        rows = [
            {
                "notification_id": e.notification_id,
                "type": e.type,
                "aggregate_type": e.aggregate_type,
                "aggregate_id": e.aggregate_id,
                "aggregate_version": e.aggregate_version,
                "actor": e.actor,
                "occurred_at": clickhouse_time(e.occurred_at),
                "data": json.dumps(e.data, separators=(",", ":"), sort_keys=True, default=str),
            }
            for n, e in sorted(unique.items())
            if n not in existing
        ]
        if rows:
            token = "directory:" + ",".join(str(r["notification_id"]) for r in rows)
            await self._ch.insert_json_rows("directory_events", rows, dedup_token=token)
        return len(rows)
