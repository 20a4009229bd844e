"""Use case: mirror the directory's integration events into ``directory_events`` for audit SQL, once each."""

from __future__ import annotations

import json
import logging

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse
from aqueduct_accounting.domain.usage import clickhouse_time
from aqueduct_libs.event_versions import UnknownEventError
from aqueduct_libs.events import DirectoryEvent

__all__ = ["DirectoryMirror"]

log = logging.getLogger(__name__)

_EXISTING = "SELECT notification_id FROM directory_events WHERE notification_id IN {ids:Array(UInt64)}"


class DirectoryMirror:
    def __init__(self, clickhouse: AsyncClickHouse) -> None:
        self._ch = clickhouse
        self._unknown: set[tuple[str, int]] = set()  # reported once each

    def read(self, payload: bytes) -> DirectoryEvent:
        """A message of the ``DIRECTORY`` stream, its ``data`` read as its type's model: the newest
        version this code knows (upcast), which is what is stored.

        Data its model refuses raises ``ValueError`` (pydantic's ``ValidationError``): the directory broke
        its contract, and the consumer sets the message aside. A type or version this code does not know
        (from a newer directory) is stored as published: the audit copy does not wait for an upgrade."""
        event = DirectoryEvent.model_validate_json(payload)
        try:
            typed = event.payload()
        except UnknownEventError as exc:
            if (event.type, event.version) not in self._unknown:
                self._unknown.add((event.type, event.version))
                log.warning("mirroring directory events as published: %s", exc)
            return event
        return event.model_copy(
            update={"version": typed.event_version, "data": typed.model_dump(mode="json")}
        )

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
