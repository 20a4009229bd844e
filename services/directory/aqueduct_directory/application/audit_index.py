"""The audit index: one small row per stored event, kept current as events are folded.

An audit page shows 50 events out of hundreds of thousands. Folding (decoding) every stored event for each
page took seconds at the size of a university; the index answers which events match (object, actor, event
type, kind of object, time, a cursor) and how many, and only the page's events are then read from the store.
Rows are kept in notification order; timestamps grow with it (the store's order is the order of recording),
so time bounds and cursors are binary searches.

``record`` runs on the event loop while ``select`` runs in a worker thread: a row's columns and index
entries are appended first and its ``ids`` entry last, and ``select`` reads ``len(ids)`` once and ignores
every row at or past it, so it never sees a row half recorded.
"""

from __future__ import annotations

import sys
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["AuditIndex", "AuditQuery"]


@dataclass(frozen=True)
class AuditQuery:
    aggregate_id: str | None = None
    actor: str | None = None
    event_type: str | None = None
    aggregate_type: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # inclusive
    after_id: int | None = None  # cursor: only events with a greater notification id
    before_id: int | None = None  # cursor: only events with a smaller notification id


class AuditIndex:
    def __init__(self) -> None:
        self.position = 0  # last notification id indexed
        self.ids: list[int] = []
        self.times: list[datetime] = []
        self.objects: list[str] = []
        self.actors: list[str] = []
        self.types: list[str] = []
        self.kinds: list[str] = []
        # Row numbers (ascending) of each object, actor, event type and kind of object.
        self.by_object: dict[str, list[int]] = defaultdict(list)
        self.by_actor: dict[str, list[int]] = defaultdict(list)
        self.by_type: dict[str, list[int]] = defaultdict(list)
        self.by_kind: dict[str, list[int]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self.ids)

    def record(self, domain_event: Any, notification_id: int) -> None:
        row = len(self.ids)
        cls = type(domain_event)
        values = (
            sys.intern(str(domain_event.originator_id)),
            sys.intern(str(getattr(domain_event, "actor", "system"))),
            sys.intern(cls.__name__),
            sys.intern(cls.__qualname__.split(".")[0]),
        )
        self.times.append(domain_event.timestamp)
        for column, index, value in zip(
            (self.objects, self.actors, self.types, self.kinds),
            (self.by_object, self.by_actor, self.by_type, self.by_kind),
            values,
            strict=True,
        ):
            column.append(value)
            index[value].append(row)
        self.ids.append(notification_id)  # last: the row is complete (see ``select``)
        self.position = notification_id

    def select(self, query: AuditQuery, offset: int, limit: int, newest_first: bool) -> tuple[list[int], int]:
        """Notification ids of one page of matching events, and how many match in all (cursor aside)."""
        wanted = [
            (index, column, value)
            for index, column, value in (
                (self.by_object, self.objects, query.aggregate_id),
                (self.by_actor, self.actors, query.actor),
                (self.by_type, self.types, query.event_type),
                (self.by_kind, self.kinds, query.aggregate_type),
            )
            if value is not None
        ]
        if any(value not in index for index, _, value in wanted):
            return [], 0
        rows_done = len(self.ids)  # read once: rows from here on may be half recorded (``record``)
        # Walk the shortest list of rows; the other filters are checked on its rows only.
        base: Sequence[int] = range(rows_done)
        walked = -1
        for n, (index, _, value) in enumerate(wanted):
            if len(index[value]) < len(base):
                base, walked = index[value], n
        if walked >= 0:
            base = base[: bisect_left(base, rows_done)]
        checks = [(column, value) for n, (_, column, value) in enumerate(wanted) if n != walked]
        lo, hi = 0, len(base)
        if query.since is not None:
            lo = bisect_left(base, query.since, key=self.times.__getitem__)
        if query.until is not None:
            hi = bisect_right(base, query.until, key=self.times.__getitem__)
        rows: Sequence[int] = base[lo:hi] if hi > lo else []
        if checks:
            rows = [r for r in rows if all(column[r] == value for column, value in checks)]
        total = len(rows)
        if query.after_id is not None:
            rows = rows[bisect_right(rows, query.after_id, key=self.ids.__getitem__) :]
        if query.before_id is not None:
            rows = rows[: bisect_left(rows, query.before_id, key=self.ids.__getitem__)]
        if newest_first:
            end = len(rows) - offset
            page = rows[max(0, end - limit) : max(0, end)]
            return [self.ids[r] for r in reversed(page)], total
        return [self.ids[r] for r in rows[offset : offset + limit]], total
