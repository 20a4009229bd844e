"""The ids of the usage events stored recently, by the second they occurred in: a duplicate check without a query.

A duplicate is the same event, so it carries the same ``occurred_at``. The set holds every event id stored
with ``occurred_at`` at or after ``horizon`` (a UTC second, ``YYYY-MM-DD hh:mm:ss``): at start it is loaded
from ``usage_events`` for the last ``window`` seconds, then every stored batch is added. So for an event at
or after the horizon the set's answer is the table's answer; an older event (a backlog, a proxy's journal
replayed much later) is checked against the table. The horizon only moves forward: with the clock, and
when the set holds more than ``max_ids`` ids (its oldest seconds are dropped first).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

__all__ = ["RecentIds", "next_second"]


class RecentIds:
    def __init__(self, max_ids: int) -> None:
        self._max_ids = max_ids
        self._seconds: dict[str, set[str]] = {}
        self._size = 0
        self.horizon = "9999-12-31 23:59:59"  # nothing is covered until ``start``

    def __len__(self) -> int:
        return self._size

    def start(self, horizon: str, stored: Iterable[tuple[str, str]]) -> None:
        """Every ``(event_id, occurred_at)`` stored with ``occurred_at`` at or after ``horizon``."""
        self._seconds = {}
        self._size = 0
        self.horizon = horizon[:19]
        self.add(stored)
        self._trim()

    def covers(self, occurred_at: str) -> bool:
        return occurred_at[:19] >= self.horizon

    def contains(self, event_id: str, occurred_at: str) -> bool:
        """Whether the event is stored; only meaningful when ``covers(occurred_at)``."""
        ids = self._seconds.get(occurred_at[:19])
        return ids is not None and event_id in ids

    def add(self, stored: Iterable[tuple[str, str]]) -> None:
        horizon = self.horizon
        seconds = self._seconds
        for event_id, occurred_at in stored:
            second = occurred_at[:19]
            if second < horizon:
                continue
            ids = seconds.get(second)
            if ids is None:
                ids = seconds[second] = set()
            before = len(ids)
            ids.add(event_id)
            self._size += len(ids) - before
        self._trim()

    def advance(self, horizon: str) -> None:
        """Forget the seconds before ``horizon`` (never moves back: a clock stepping back changes nothing)."""
        horizon = horizon[:19]
        if horizon <= self.horizon:
            return
        self.horizon = horizon
        for second in [s for s in self._seconds if s < horizon]:
            self._size -= len(self._seconds.pop(second))

    def _trim(self) -> None:
        if self._size <= self._max_ids:
            return
        for second in sorted(self._seconds):
            if self._size <= self._max_ids:
                break
            self._size -= len(self._seconds.pop(second))
            # The set no longer answers for this second: raise the horizon just past it.
            self.horizon = max(self.horizon, next_second(second))


def next_second(second: str) -> str:
    """``YYYY-MM-DD hh:mm:ss`` one second later (a text that sorts after every time within ``second``)."""
    return (datetime.fromisoformat(second) + timedelta(seconds=1)).isoformat(" ")[:19]
