"""Roll-ups off the insert path (issue 15): ``usage_totals`` written every few seconds with a mark, the views
``usage_by_*`` adding the tail, on chDB for real."""

from __future__ import annotations

import asyncio
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.application import rollups
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.application.rollups import RollupGate, StoreClock, latest_mark, roll_up
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.settings import default_migrations_dir

_SUMS = "SELECT sum(requests), sum(input_tokens), sum(cost_nanos) FROM {view}"
VIEWS = ("usage_by_minute", "usage_by_hour", "usage_by_day")


def _rows(prefix: str, count: int, start: datetime) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}-{i}",
            "occurred_at": (start + timedelta(minutes=7 * i)).isoformat(" ", "milliseconds")[:23],
            "org_id": f"org-{i % 3}",
            "team_id": "team",
            "user_id": f"user-{i % 5}",
            "token_id": "tok",
            "model": "m",
            "input_tokens": 10 + i,
            "output_tokens": 1,
            "cost_nanos": 1000 + i,
        }
        for i in range(count)
    ]


def _expected(rows: list[dict[str, Any]]) -> list[int]:
    return [len(rows), sum(r["input_tokens"] for r in rows), sum(r["cost_nanos"] for r in rows)]


def _sums(engine: ClickHouse, view: str) -> list[int]:
    return [int(v or 0) for v in engine.query(_SUMS.format(view=view)).rows[0]]


def _active_parts(engine: ClickHouse, table: str) -> int:
    return int(
        engine.query(
            "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = {t:String} AND active",
            {"t": table},
        ).rows[0][0]
    )


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    apply_migrations(engine, default_migrations_dir())
    yield engine
    engine.close()


@pytest.mark.chdb
async def test_every_stored_event_counts_once_before_and_after_each_roll_up(engine: ClickHouse) -> None:
    ingest = UsageIngest(AsyncClickHouse(engine), PriceBook())
    now = [1_800_000_000.25]
    ingest.store_clock = StoreClock(clock=lambda: now[0])
    start = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)  # events across two days, many minutes
    stored: list[dict[str, Any]] = []
    for n in range(6):
        now[0] += 0.75
        batch = _rows(f"b{n}", 40, start + timedelta(hours=n))
        await ingest.ingest_rows([dict(r) for r in batch])
        stored += batch
        for view in VIEWS:  # counted at once, rolled up or not
            assert _sums(engine, view) == _expected(stored), view
        if n % 2:
            roll_up(engine, ingest.store_clock.stored_through())
            for view in VIEWS:
                assert _sums(engine, view) == _expected(stored), view
    # The same events again (a redelivery): nothing new.
    await ingest.ingest_rows([dict(r) for r in _rows("b3", 40, start + timedelta(hours=3))])
    for view in VIEWS:
        assert _sums(engine, view) == _expected(stored), view
    assert int(engine.query("SELECT count() FROM usage_totals WHERE grain = 'mark'").rows[0][0]) >= 2


@pytest.mark.chdb
def test_a_roll_up_is_one_part_and_marks_only_finished_inserts(engine: ClickHouse) -> None:
    clock = StoreClock(clock=lambda: 1_800_000_000.0)
    clock.start(0, latest_mark(engine))
    for n in range(3):
        stamp = clock.stamp()
        recorded = datetime.fromtimestamp(stamp / 1000, UTC).isoformat(" ", "milliseconds")[:23]
        engine.insert_json_rows(
            "usage_events",
            [{**r, "recorded_at": recorded} for r in _rows(f"p{n}", 30, datetime(2026, 1, 1, tzinfo=UTC))],
        )
        clock.finished(stamp)
    engine.execute("SYSTEM STOP MERGES usage_totals")
    parts = _active_parts(engine, "usage_totals")
    # The three inserts were stamped within one second (1,800,000,000.000 .. .002): that second is not
    # whole yet, so nothing is rolled up.
    assert roll_up(engine, clock.stored_through()) == 0
    assert roll_up(engine, 1_800_000_001.0) == 90
    assert _active_parts(engine, "usage_totals") == parts + 1  # sums and mark: one part
    assert latest_mark(engine) == 1_800_000_001
    assert roll_up(engine, 1_800_000_001.9) == 0  # nothing new
    for view in VIEWS:
        assert _sums(engine, view)[0] == 90


def test_the_store_clock_never_goes_back_nor_marks_past_a_failed_insert() -> None:
    now = [1_000.0]
    clock = StoreClock(clock=lambda: now[0], failed_grace=60.0)
    clock.start(latest_recorded_ms=1_000_500, mark_seconds=1_002)  # a mark ahead of the wall clock
    first = clock.stamp()
    assert first >= 1_002_000  # after the mark: the event is in the tail, not behind a roll-up
    now[0] = 900.0  # the wall clock set back
    second = clock.stamp()
    assert second == first + 1
    clock.finished(second)
    assert clock.stored_through() == second / 1000
    third = clock.stamp()
    clock.failed(third)  # a server may still write it
    fourth = clock.stamp()
    clock.finished(fourth)
    assert clock.stored_through() < third / 1000
    now[0] += 61.0
    assert clock.stored_through() == fourth / 1000


@pytest.mark.chdb
def test_catching_up_goes_in_bounded_steps(engine: ClickHouse, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollups, "MAX_EVENTS_PER_ROLLUP", 25)
    rows = []
    crowded = datetime.fromtimestamp(1_799_999_999, UTC).isoformat(" ", "milliseconds")[:23]
    rows += [{**r, "recorded_at": crowded} for r in _rows("c", 60, datetime(2026, 2, 1, tzinfo=UTC))]
    for second in range(6):  # 20 events recorded in each of six seconds
        recorded = datetime.fromtimestamp(1_800_000_000 + second, UTC).isoformat(" ", "milliseconds")[:23]
        rows += [
            {**r, "recorded_at": recorded} for r in _rows(f"s{second}", 20, datetime(2026, 2, 1, tzinfo=UTC))
        ]
    engine.insert_json_rows("usage_events", rows)
    steps = []
    while count := roll_up(engine, 1_800_000_006.5):
        steps.append(count)
    # The crowded second whole first (more than the bound), then steps of at most 40.
    assert steps[0] == 60 and sum(steps) == 180 and max(steps[1:]) <= 40 and len(steps) >= 4
    assert latest_mark(engine) == 1_800_000_006
    assert int(engine.query("SELECT sum(requests) FROM usage_totals WHERE grain = 'day'").rows[0][0]) == 180


@pytest.mark.chdb
def test_emptied_roll_ups_count_from_the_tail_until_rolled_up_again(engine: ClickHouse) -> None:
    """What the quarantine of rows out of bounds and a lost usage table do: the totals emptied."""
    recorded = datetime.fromtimestamp(1_800_000_000, UTC).isoformat(" ", "milliseconds")[:23]
    rows = _rows("t", 60, datetime(2026, 4, 1, tzinfo=UTC))
    engine.insert_json_rows("usage_events", [{**r, "recorded_at": recorded} for r in rows])
    assert roll_up(engine, 1_800_000_001.0) == 60
    engine.execute("TRUNCATE TABLE usage_totals")
    assert latest_mark(engine) == 0
    for view in VIEWS:
        assert _sums(engine, view) == _expected(rows), view
    assert roll_up(engine, 1_800_000_001.0) == 60
    for view in VIEWS:
        assert _sums(engine, view) == _expected(rows), view
    assert int(engine.query("SELECT sum(requests) FROM usage_totals WHERE grain = 'hour'").rows[0][0]) == 60


@pytest.mark.chdb
def test_queries_on_recorded_at_count_right_whatever_the_constant(engine: ClickHouse) -> None:
    """The tail's index is of recorded_at in milliseconds: an index of the DateTime64 column itself made
    this engine skip granules for comparisons with a DateTime (4,500 counted of 5,000)."""
    # A copy of the migrated table (columns and indexes) with small granules, as a large table has many.
    engine.execute(
        "CREATE TABLE probe AS usage_events ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(occurred_at) "
        "ORDER BY (toStartOfHour(occurred_at), org_id, event_id) SETTINGS index_granularity = 100"
    )
    assert engine.query("SELECT count() FROM system.data_skipping_indices WHERE table = 'probe'").rows == [
        [1]
    ]
    for second in range(20):  # events recorded a minute after they occurred, in order
        engine.insert_json_rows(
            "probe",
            [
                {
                    "event_id": f"q{second}-{i:03d}",
                    "occurred_at": f"2026-12-05 04:55:{second:02d}.{i:03d}",
                    "recorded_at": f"2026-12-05 04:56:{second:02d}.300",
                    "org_id": "org",
                }
                for i in range(500)
            ],
        )
    engine.execute("OPTIMIZE TABLE probe FINAL")
    for condition in (
        "recorded_at < toDateTime('2026-12-05 04:56:10', 'UTC')",
        "recorded_at >= toDateTime('2026-12-05 04:56:10', 'UTC')",
        "recorded_at < toDateTime64('2026-12-05 04:56:10', 3, 'UTC')",
        "recorded_at < '2026-12-05 04:56:10'",
        "toUnixTimestamp64Milli(recorded_at) >= 1796446570000",
    ):
        counted = engine.query(f"SELECT count() FROM probe WHERE {condition}").rows[0][0]
        plain = engine.query(
            f"SELECT count() FROM probe WHERE {condition} SETTINGS use_skip_indexes = 0"
        ).rows[0][0]
        assert int(counted) == int(plain) == 5000, condition


@pytest.mark.chdb
def test_migrating_from_the_view_fed_roll_up_keeps_every_sum(tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for path in default_migrations_dir().glob("*.sql"):
        if path.name < "0009":
            shutil.copy(path, before)
    engine = ClickHouse(embedded_dsn(tmp_path / "chdb"))
    try:
        apply_migrations(engine, before)
        rows = _rows("old", 200, datetime(2026, 1, 31, 20, 0, tzinfo=UTC))  # two months
        engine.insert_json_rows("usage_events", rows)
        sums = {view: _sums(engine, view) for view in VIEWS}
        assert apply_migrations(engine, default_migrations_dir()) == ["0009"]
        assert {view: _sums(engine, view) for view in VIEWS} == sums
        # Nothing rolled up yet: every event is in the tail until accounting's first roll-ups.
        assert latest_mark(engine) == 0
        assert roll_up(engine, time.time() + 1) == 200
        assert {view: _sums(engine, view) for view in VIEWS} == sums
        tables = {row[0] for row in engine.query("SHOW TABLES").rows}
        assert "usage_rollup" not in tables and "usage_rollup_mv" not in tables
    finally:
        engine.close()


async def test_a_roll_up_waits_for_reads_and_holds_new_ones_back() -> None:
    gate = RollupGate()
    order: list[str] = []
    first_read = asyncio.Event()
    release = asyncio.Event()

    async def read(name: str, hold: asyncio.Event | None = None) -> None:
        async with gate.reading():
            order.append(f"{name} in")
            first_read.set()
            if hold is not None:
                await hold.wait()
            order.append(f"{name} out")

    async def write() -> None:
        async with gate.writing():
            order.append("roll-up")

    reader = asyncio.create_task(read("a", release))
    await first_read.wait()
    writer = asyncio.create_task(write())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(read("b"))
    await asyncio.sleep(0.01)
    assert order == ["a in"]  # the roll-up waits for a; b waits behind the roll-up
    release.set()
    await asyncio.gather(reader, writer, late)
    assert order == ["a in", "a out", "roll-up", "b in", "b out"]


@pytest.mark.chdb
async def test_reports_count_each_event_once_while_it_moves_from_the_tail_to_the_totals(
    engine: ClickHouse,
) -> None:
    from aqueduct_accounting.adapters.analyst_sql import AnalystEngine, AnalystQueries, QueryLimits
    from aqueduct_accounting.application.reports import Reports, ReportWindow
    from aqueduct_accounting.domain.scope import UsageFilter, Viewer

    recorded = datetime.fromtimestamp(1_800_000_000, UTC).isoformat(" ", "milliseconds")[:23]
    start = datetime(2026, 5, 1, 22, 0, tzinfo=UTC)
    rows = _rows("r", 90, start)  # 7 minutes apart: days, hours and minutes of a window
    engine.insert_json_rows("usage_events", [{**r, "recorded_at": recorded} for r in rows])
    analyst = AnalystQueries(AnalystEngine.read_only(engine.dsn, QueryLimits()))
    # Nothing recorded after the inserted rows: once they are rolled up, the report skips the tail.
    reports = Reports(AsyncClickHouse(engine), analyst, newest_stamp=lambda: 1_800_000_000_000)
    admin = Viewer(user_id="admin", admin=True)
    # Unaligned: raw ends, minute and hour edges, whole days in the middle.
    window = ReportWindow(start + timedelta(minutes=3, seconds=20), start + timedelta(hours=10, minutes=1))
    inside = [
        r
        for r in rows
        if window.since.isoformat(" ")[:23] <= r["occurred_at"] < window.until.isoformat(" ")[:23]
    ]

    async def total() -> list[int]:
        summary = await reports.summary(admin, UsageFilter(), window, None)
        return [summary["totals"][name] for name in ("requests", "input_tokens", "cost_nanos")]

    assert await total() == _expected(inside)  # all in the tail
    assert roll_up(engine, 1_800_000_001.0) == 90
    assert await total() == _expected(inside)  # all in the totals


@pytest.mark.chdb
def test_marks_older_than_a_day_before_the_latest_are_pruned_and_no_sum_moves(engine: ClickHouse) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stored: list[dict[str, Any]] = []
    base = 1_800_000_000
    for n in range(6):  # one roll-up every 12 hours: marks across two and a half days
        stamp = (base + n * 12 * 3600) * 1000
        recorded = datetime.fromtimestamp(stamp / 1000, UTC).isoformat(" ", "milliseconds")[:23]
        batch = _rows(f"m{n}", 10, start + timedelta(hours=n))
        engine.insert_json_rows("usage_events", [{**r, "recorded_at": recorded} for r in batch])
        stored += batch
        assert roll_up(engine, stamp / 1000 + 1) == 10
    latest = latest_mark(engine)
    assert latest == base + 5 * 12 * 3600 + 1
    sums = {view: _sums(engine, view) for view in VIEWS}
    assert all(s == _expected(stored) for s in sums.values())

    assert rollups.prune_marks(engine) == 3  # older than latest - 24 h: the 1st, 2nd and 3rd marks
    marks = engine.query("SELECT toUnixTimestamp(bucket) FROM usage_totals WHERE grain = 'mark' ORDER BY 1")
    assert [int(m) for (m,) in marks.rows] == [latest - 24 * 3600, latest - 12 * 3600, latest]
    assert latest_mark(engine) == latest
    assert {view: _sums(engine, view) for view in VIEWS} == sums  # no total and no tail event moved
    assert rollups.prune_marks(engine) == 0  # nothing more: no delete is run
    assert rollups.prune_marks(engine, kept_seconds=0) == 2  # the latest mark is never deleted
    assert latest_mark(engine) == latest
    assert {view: _sums(engine, view) for view in VIEWS} == sums
    # Later roll-ups go on from the kept mark.
    engine.insert_json_rows(
        "usage_events",
        [
            {**r, "recorded_at": datetime.fromtimestamp(latest + 5, UTC).isoformat(" ", "milliseconds")[:23]}
            for r in _rows("after", 4, start)
        ],
    )
    assert roll_up(engine, latest + 7) == 4
    assert _sums(engine, "usage_by_day")[0] == len(stored) + 4


@pytest.mark.chdb
def test_pruning_an_empty_table_does_nothing(engine: ClickHouse) -> None:
    assert rollups.prune_marks(engine) == 0
    assert latest_mark(engine) == 0
