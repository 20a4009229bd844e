"""Use case: roll the stored usage events up every ``ROLLUP_INTERVAL_SECONDS`` (30), off the insert path
(issue 15).

``usage_totals`` (migration 0009) holds the three roll-ups (grains ``minute``, ``hour``, ``day``) and one
``mark`` row per roll-up whose ``bucket`` says through when it is complete: every event whose
``recorded_at`` is before the latest mark is counted there, none after it. The views ``usage_by_minute``,
``usage_by_hour`` and ``usage_by_day`` add the events recorded since (the tail), so readers see every
stored event, once, whether it is rolled up yet or not.

A roll-up reads the events recorded between the latest mark and a new one, and writes their sums together
with the new mark in one insert of one block: the table is not partitioned, so that is one part, which
lands whole or not at all (a crash between the sums and the mark cannot count anything twice). The new
mark is a whole second no later than the last insert accounting knows finished: ``recorded_at`` is
stamped by accounting, strictly increasing from one insert to the next (``StoreClock``), so an insert
still running or yet to come is always recorded after it.

Only the latest mark counts; older ones are kept a day (when roll-ups ran, for whoever looks) and then
deleted by ``prune_marks`` (about 2,900 a day otherwise pile up, and every tail read scans them).

What the mark cannot cover, nothing has to repair: rows deleted from ``usage_events`` or a roll-up table
lost are handled by emptying ``usage_totals`` (everything is tail again, rolled up anew in steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson

from aqueduct_accounting.adapters.clickhouse import ClickHouse

__all__ = [
    "LATEST_MARK",
    "MARKS_KEPT_SECONDS",
    "MAX_EVENTS_PER_ROLLUP",
    "TOTALS_TABLE",
    "RollupGate",
    "StoreClock",
    "latest_mark",
    "prune_marks",
    "roll_up",
]

TOTALS_TABLE = "usage_totals"
# At most this many events in one roll-up (one insert: at most three rows an event), so that catching up
# after a long outage, or after the totals were emptied, goes in steps of bounded memory.
MAX_EVENTS_PER_ROLLUP = 200_000

# Marks older than this before the latest are deleted (the latest is never: it is what the tail starts from).
MARKS_KEPT_SECONDS = 24 * 3600

LATEST_MARK = f"SELECT toUnixTimestamp(max(bucket)) FROM {TOTALS_TABLE} WHERE grain = 'mark'"
# In milliseconds, as the table's index of recorded_at is (migration 0009).
_RANGE = (
    "toUnixTimestamp64Milli(recorded_at) >= {lo:Int64} AND toUnixTimestamp64Milli(recorded_at) < {hi:Int64}"
)
# Where a step of at most {n} events ends: after the last whole second that keeps the step within the
# bound (how many seconds do, and the last). One grouped scan of the range, no sort of its rows.
_STEP_END = f"""
SELECT count(), max(second) FROM (
    SELECT second, sum(events) OVER (ORDER BY second ROWS UNBOUNDED PRECEDING) AS so_far
    FROM (
        SELECT toUnixTimestamp(toStartOfSecond(recorded_at)) AS second, count() AS events
        FROM usage_events WHERE {_RANGE} GROUP BY second
    )
)
WHERE so_far <= {{n:UInt64}}
"""
_COUNT = f"SELECT count() FROM usage_events WHERE {_RANGE}"
_FIRST_SECOND = f"SELECT toUnixTimestamp(toStartOfSecond(min(recorded_at))) FROM usage_events WHERE {_RANGE}"
_SUMS = f"""
SELECT
    grain,
    multiIf(grain = 'minute', toStartOfMinute(occurred_at), grain = 'hour', toStartOfHour(occurred_at),
            toDateTime(toStartOfDay(occurred_at), 'UTC')) AS bucket,
    org_id, team_id, user_id, token_id, model,
    count() AS requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(cache_write_5m_tokens) AS cache_write_5m_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanos) AS cost_nanos
FROM usage_events
ARRAY JOIN ['minute', 'hour', 'day'] AS grain
WHERE {_RANGE}
GROUP BY grain, bucket, org_id, team_id, user_id, token_id, model
"""
# One block, whatever its size (a roll-up holds at most 3 * MAX_EVENTS_PER_ROLLUP rows): one part.
_ONE_BLOCK = {
    "input_format_parallel_parsing": 0,
    "max_insert_block_size": 4 * MAX_EVENTS_PER_ROLLUP,
    "min_insert_block_size_rows": 0,
    "min_insert_block_size_bytes": 0,
}


def latest_mark(engine: ClickHouse) -> int:
    """The latest mark, in seconds since 1970 (0: nothing rolled up)."""
    return int(engine.query(LATEST_MARK).rows[0][0] or 0)


def _text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")


def roll_up(engine: ClickHouse, stored_through: float) -> int:
    """Roll up the events recorded from the latest mark up to the whole second before
    ``stored_through`` (seconds since 1970: when the last insert known to have finished was recorded);
    return how many events (0: nothing to do). Blocking: run it in a worker thread."""
    lo = latest_mark(engine)
    hi = int(stored_through)  # its second: later inserts are recorded after stored_through, so after hi
    if hi <= lo:
        return 0
    params = {"lo": lo * 1000, "hi": hi * 1000, "n": MAX_EVENTS_PER_ROLLUP}
    (count,) = engine.query(_COUNT, params).rows[0]
    if int(count) > MAX_EVENTS_PER_ROLLUP:
        # The step ends after the last whole second within the bound, or after the first second when it
        # alone holds more (a second is never split: the mark is a whole second).
        seconds, last = engine.query(_STEP_END, params).rows[0]
        hi = (int(last) if int(seconds) else int(engine.query(_FIRST_SECOND, params).rows[0][0])) + 1
        params["hi"] = hi * 1000
        (count,) = engine.query(_COUNT, params).rows[0]
    if not int(count):
        return 0  # the mark may stay: every event from it on is still in the tail
    sums = engine.raw_query(_SUMS, params, fmt="JSONEachRow")
    mark = orjson.dumps({"grain": "mark", "bucket": _text(hi), "requests": 1})
    engine.insert_json_lines(TOTALS_TABLE, sums + mark + b"\n", settings=_ONE_BLOCK)
    return int(count)


_OLD_MARKS = f"{TOTALS_TABLE} WHERE grain = 'mark' AND bucket < toDateTime({{before:UInt32}}, 'UTC')"


def prune_marks(engine: ClickHouse, kept_seconds: int = MARKS_KEPT_SECONDS) -> int:
    """Delete the marks more than ``kept_seconds`` older than the latest one (a lightweight delete: only
    the parts that hold such marks get a row mask); return how many. The latest mark, and so every sum
    and every read, is unchanged. Blocking: run it in a worker thread."""
    latest = latest_mark(engine)
    if not latest:
        return 0
    params = {"before": max(latest - kept_seconds, 0)}
    (old,) = engine.query(f"SELECT count() FROM {_OLD_MARKS}", params).rows[0]
    if int(old):
        engine.execute(f"DELETE FROM {_OLD_MARKS}", params)
    return int(old)


class StoreClock:
    """``recorded_at`` of each insert into ``usage_events``: the wall clock in milliseconds, but always
    after the previous insert's and after the latest mark (a clock set back, or a mark written by a
    process whose clock ran ahead, never puts an event behind a roll-up already written).

    ``stored_through()`` is what a roll-up may cover: the stamp of the latest insert that finished, held
    below the stamp of an insert that failed for ``failed_grace`` seconds (a server may still be writing
    an insert its client gave up on: its rows must not appear behind a mark)."""

    def __init__(self, clock: Callable[[], float] = time.time, failed_grace: float = 120.0) -> None:
        self._clock = clock
        self._grace = failed_grace
        self._given = 0  # milliseconds: the latest stamp handed out
        self._finished = 0  # milliseconds: the stamp of the latest insert that finished
        self._failed: tuple[int, float] | None = None  # (stamp, when) of the oldest failure held
        self._started = False

    def start(self, latest_recorded_ms: int, mark_seconds: int) -> None:
        """At start, before any insert: what the table holds (every insert in it has finished)."""
        self._given = max(self._given, latest_recorded_ms, mark_seconds * 1000 - 1)
        self._finished = max(self._finished, self._given)
        self._started = True

    def newest_stamp(self) -> int | None:
        """No row of the table was recorded after this (milliseconds); None before ``start``."""
        return self._given if self._started else None

    def stamp(self) -> int:
        """A new stamp, in milliseconds since 1970."""
        self._given = max(int(self._clock() * 1000), self._given + 1)
        return self._given

    def finished(self, stamp_ms: int) -> None:
        self._finished = max(self._finished, stamp_ms)

    def failed(self, stamp_ms: int) -> None:
        if self._failed is None:
            self._failed = (stamp_ms, self._clock())

    def stored_through(self) -> float:
        """Seconds since 1970."""
        through = self._finished
        if self._failed is not None:
            stamp, at = self._failed
            if self._clock() - at < self._grace:
                through = min(through, stamp - 1)
            else:
                self._failed = None
        return through / 1000


class RollupGate:
    """Reads of the totals and their tail against roll-ups: a roll-up moves events from the tail into the
    totals, so a read that saw the mark before it and the totals after it would count them twice. Reads
    (reports, budget reconciliation, ad-hoc SQL) share the gate; a roll-up waits for them and holds new
    ones back until it is written (a few milliseconds every interval)."""

    def __init__(self) -> None:
        self._turn = asyncio.Lock()  # a roll-up holds it while it waits and writes
        self._readers = 0
        self._no_readers = asyncio.Event()
        self._no_readers.set()

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        async with self._turn:
            self._readers += 1
            self._no_readers.clear()
        try:
            yield
        finally:
            self._readers -= 1
            if not self._readers:
                self._no_readers.set()

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        async with self._turn:
            await self._no_readers.wait()
            yield
