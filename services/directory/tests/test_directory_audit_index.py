"""The audit index is read in a worker thread while the event loop records into it: a ``select`` that
runs between two appends of ``record`` must see the rows recorded before, never a half-recorded one."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aqueduct_directory.application.audit_index import AuditIndex, AuditQuery

START = datetime(2026, 1, 1, tzinfo=UTC)


class User:
    @dataclass
    class Registered:
        originator_id: str
        actor: str
        timestamp: datetime


class Team:
    @dataclass
    class Created:
        originator_id: str
        actor: str
        timestamp: datetime


QUERIES = [
    AuditQuery(),
    AuditQuery(aggregate_id="u-new"),
    AuditQuery(aggregate_id="u-1", actor="root"),
    AuditQuery(actor="root", aggregate_type="User"),
    AuditQuery(actor="alice", event_type="Created"),
    AuditQuery(aggregate_type="Team", since=START, until=START + timedelta(hours=1)),
    AuditQuery(actor="root", after_id=2),
]


def _pages(index: AuditIndex) -> list[tuple[list[int], int]]:
    return [index.select(q, 0, 50, newest) for q in QUERIES for newest in (False, True)]


def test_a_select_between_the_appends_of_a_record_sees_only_complete_rows() -> None:
    index = AuditIndex()
    for n, event in enumerate(
        [
            User.Registered("u-1", "root", START),
            Team.Created("t-1", "alice", START + timedelta(minutes=1)),
            User.Registered("u-2", "root", START + timedelta(minutes=2)),
        ],
        1,
    ):
        index.record(event, n)
    before = _pages(index)
    seen: list[list[tuple[list[int], int]]] = []

    class Probe(list[Any]):
        """A column or row list that runs every query just before each append lands."""

        def append(self, value: Any) -> None:
            seen.append(_pages(index))
            super().append(value)

    for name in ("ids", "times", "objects", "actors", "types", "kinds"):
        setattr(index, name, Probe(getattr(index, name)))
    for name in ("by_object", "by_actor", "by_type", "by_kind"):
        column: defaultdict[str, list[int]] = getattr(index, name)
        column.default_factory = Probe
        for key in column:
            column[key] = Probe(column[key])

    index.record(User.Registered("u-new", "root", START + timedelta(minutes=3)), 4)
    index.record(Team.Created("t-2", "bob", START + timedelta(minutes=4)), 5)

    assert len(seen) == 2 * 10  # each record: ids, times, four columns, four index lists
    assert seen[:10] == [before] * 10  # the first new row is not visible until it is complete
    after_first = seen[10]
    assert after_first != before and seen[10:] == [after_first] * 10
    assert index.select(AuditQuery(aggregate_id="u-new"), 0, 50, False) == ([4], 1)
    assert _pages(index)[:2] == [([1, 2, 3, 4, 5], 5), ([5, 4, 3, 2, 1], 5)]
