"""Accounting benchmark: JetStream -> ClickHouse ingest rate, publish-to-row delay, report query times.

    .venv/bin/python bench/accounting.py [--events 200000] [--rows 10000000]

Runs on the embedded engines (a NATS server of its own, chDB in a temporary folder), in one process,
with the service's own consumer and report code. Prints a markdown table.

The ingest runs build the usage consumer with ``bootstrap.usage_consumer`` and the service's reader
(``bootstrap.usage_reader``: msgspec, priced as read); they used to read with the older
``usage_rows_from_json``, which the service no longer uses (about 2 CPU-µs an event more). They wait on
the store's own count of inserted events, then count the table once: polling ``SELECT count()``
through chDB every 20 ms in the same process was not ingest, yet cost about a tenth of its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import nats

from aqueduct_accounting.adapters.analyst_sql import AnalystEngine, AnalystQueries, QueryLimits
from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
from aqueduct_accounting.adapters.price_catalog import load_price_catalog
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.application.reports import Reports, ReportWindow
from aqueduct_accounting.application.rollups import MAX_EVENTS_PER_ROLLUP, roll_up
from aqueduct_accounting.application.self_repair import migrate_and_repair
from aqueduct_accounting.bootstrap import usage_consumer, usage_reader
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.scope import UsageFilter, Viewer
from aqueduct_accounting.domain.usage import UsageMessage
from aqueduct_accounting.entrypoints.stream_consumer import BatchConsumer, broker_on
from aqueduct_accounting.settings import AccountingSettings, default_migrations_dir
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.events import UsageRecorded

SETTINGS = AccountingSettings()


def _event(i: int, when: datetime, prefix: str = "bench") -> bytes:
    return (
        UsageRecorded(
            event_id=f"{prefix}-{i:09d}",
            occurred_at=when,
            token_id=f"tok-{i % 3000}",
            user_id=f"user-{i % 1000}",
            team_id=f"team-{i % 50}",
            org_id=f"org-{i % 5}",
            endpoint="local",
            model=("gpt-4o-mini", "gpt-4o", "local-llama")[i % 3],
            route="/v1/chat/completions",
            status_code=200,
            input_tokens=100 + i % 400,
            output_tokens=20 + i % 300,
        )
        .model_dump_json()
        .encode()
    )


async def _publish(nc: nats.NATS, payloads: list[bytes], first: int) -> None:
    """Core publishes into the stream (JetStream stores them), flushed in chunks."""
    for n, payload in enumerate(payloads):
        await nc.publish(names.USAGE_SUBJECT, payload, headers={"Nats-Msg-Id": f"bench-{first + n}"})
        if n % 5000 == 4999:
            await nc.flush()
    await nc.flush()


async def _stream_count(js) -> int:
    return (await js.stream_info(names.USAGE_STREAM)).state.messages


def _count(engine: ClickHouse, where: str = "1") -> int:
    return int(engine.query(f"SELECT count() FROM usage_events WHERE {where}").rows[0][0])


async def _poll(current: Callable[[], Awaitable[int]], target: int, interval: float = 0.05) -> None:
    while True:
        if await current() >= target:
            return
        await asyncio.sleep(interval)


class _Stored:
    """What the consumer's store inserted so far: the benchmark waits on this count, in memory. Polling
    ``SELECT count()`` through chDB every 20 ms, in this same process, cost the ingest it measured about
    a tenth of its CPU and competed with it for the GIL; the table is counted once, at the end."""

    events = 0

    async def count(self) -> int:
        return self.events


def _consumer(
    nc: nats.NATS, js, engine: ClickHouse, durable: str, batch: int
) -> tuple[BatchConsumer, _Stored]:
    """The usage consumer as ``aqueduct_accounting.bootstrap`` builds it (``usage_consumer`` with the
    settings' defaults, the service's reader ``usage_reader``: msgspec, priced as read). Its store is the
    service's without budgets, metrics and dead letters (none configured here)."""
    stored = _Stored()
    prices = PriceBook(load_price_catalog())
    ingest = UsageIngest(
        AsyncClickHouse(engine),
        prices,
        window_seconds=SETTINGS.recent_ids_seconds,
        max_recent_ids=SETTINGS.recent_ids_max,
    )

    async def store(messages: list[UsageMessage]) -> None:
        result = await ingest.ingest_rows([row for message in messages for row in message.rows])
        stored.events += result.inserted

    settings = SETTINGS.model_copy(
        update={"consumer_name": durable, "batch_size": batch, "ack_wait_seconds": 60}
    )
    return usage_consumer(broker_on(nc), settings, usage_reader(prices), store), stored


async def measure_batched_ingest(
    engine: ClickHouse, nats_url: str, events: int, per_message: int
) -> dict[str, float]:
    """The same events, ``per_message`` to a message (a JSON array), as the proxy's publisher groups them
    (``AQUEDUCT_PROXY_USAGE_EVENTS_PER_MESSAGE``, 100 by default)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.purge_stream(names.USAGE_STREAM)
    when = datetime.now(UTC) - timedelta(days=2)
    before = _count(engine)
    for first in range(0, events, per_message):
        payload = (
            b"[" + b",".join(_event(i, when, "batched") for i in range(first, first + per_message)) + b"]"
        )
        await nc.publish(names.USAGE_SUBJECT, payload, headers={"Nats-Msg-Id": f"batched-{first}"})
    await nc.flush()
    await _poll(lambda: _stream_count(js), events // per_message)
    consumer, stored = _consumer(nc, js, engine, "bench-batched", 20_000)
    started, cpu_started = time.perf_counter(), time.process_time()
    await consumer.start()
    await _poll(stored.count, events, 0.005)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    await consumer.stop()
    assert _count(engine) == before + events, "the inserts' rows are not all in usage_events"
    await nc.close()
    return {"rate": events / seconds, "seconds": seconds, "cpu_us": cpu_seconds / events * 1e6}


async def measure_ingest(engine: ClickHouse, nats_url: str, events: int, batch: int) -> dict[str, float]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_topology(js)
    when = datetime.now(UTC) - timedelta(days=1)
    await _publish(nc, [_event(i, when) for i in range(events)], 0)
    await _poll(lambda: _stream_count(js), events)

    consumer, stored = _consumer(nc, js, engine, "bench", batch)
    started, cpu_started = time.perf_counter(), time.process_time()
    await consumer.start()
    await _poll(stored.count, events, 0.005)
    ingest_seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    assert _count(engine) == events, "the inserts' rows are not all in usage_events"

    # Publish-to-row delay at a steady 2,000 events per second, the consumer running.
    delays_from = events
    for second in range(5):
        tick = time.perf_counter()
        for chunk in range(20):
            now = datetime.now(UTC)
            first = delays_from + second * 2000 + chunk * 100
            await _publish(nc, [_event(first + k, now) for k in range(100)], first)
            await asyncio.sleep(max(0.0, tick + (chunk + 1) * 0.05 - time.perf_counter()))
    await _poll(stored.count, events + 10_000)
    await consumer.stop()
    await nc.close()
    p50, p99 = engine.query(
        "SELECT quantileExact(0.5)(d), quantileExact(0.99)(d) FROM (SELECT dateDiff('millisecond', occurred_at, "
        "recorded_at) AS d FROM usage_events WHERE event_id >= {first:String} AND event_id LIKE 'bench-%')",
        {"first": f"bench-{events:09d}"},
    ).rows[0]
    return {
        "ingest_rate": events / ingest_seconds,
        "ingest_seconds": ingest_seconds,
        "cpu_us": cpu_seconds / events * 1e6,
        "p50": p50,
        "p99": p99,
    }


_TOTALS_PARTS = "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'usage_totals' AND active"


def roll_up_all(engine: ClickHouse) -> float:
    """What accounting's roll-ups do with what was inserted: every step until none is due; then the
    engine's background merges of their parts (a report over many unmerged parts sums them all), as a
    running accounting has between a catch-up and the reports people read afterwards (at most 60 s)."""
    started = time.perf_counter()
    while roll_up(engine, time.time() + 1):
        pass
    while int(engine.query(_TOTALS_PARTS).rows[0][0]) > 3 and time.perf_counter() - started < 60:
        time.sleep(0.5)
    return time.perf_counter() - started


def generate(engine: ClickHouse, rows: int) -> float:
    """``rows`` usage events over the last 30 days, straight into chDB (rolled up by ``roll_up_all``)."""
    started = time.perf_counter()
    step = 2_000_000
    for offset in range(0, rows, step):
        engine.execute(
            f"""
            INSERT INTO usage_events (event_id, occurred_at, kind, token_id, user_id, service_account_id, team_id,
                org_id, endpoint, model, route, status_code, input_tokens, output_tokens, cached_tokens, cost_nanos,
                latency_ms, ttft_ms, streamed, cut_short, tool, batch_id)
            SELECT concat('gen-', toString(number)),
                now64(3) - toIntervalMillisecond(intDiv(number * 2592000000, {rows})),
                'model', concat('tok-', toString(number % 3000)), concat('user-', toString(number % 1000)), '',
                concat('team-', toString(number % 50)), concat('org-', toString(number % 5)), 'local',
                ['gpt-4o-mini', 'gpt-4o', 'local-llama', 'claude-3-5-sonnet'][1 + number % 4],
                '/v1/chat/completions', 200, 100 + number % 400, 20 + number % 300, 0, (number % 997) * 1000,
                12.5, NULL, false, false, '', ''
            FROM numbers({offset}, {min(step, rows - offset)})
            """
        )
    return time.perf_counter() - started


async def measure_queries(engine: ClickHouse, repeat: int = 7) -> list[tuple[str, float]]:
    analyst = AnalystQueries(AnalystEngine.read_only(engine.dsn, QueryLimits()))
    reports = Reports(AsyncClickHouse(engine), analyst)
    now = datetime.now(UTC)
    month = ReportWindow(now - timedelta(days=30), now)
    week = ReportWindow(now - timedelta(days=7), now)
    admin = Viewer("admin", admin=True)
    team_admin = Viewer("user-7", org_id="org-2", teams=("team-7",), team_admin=("team-7",))
    org_admin = Viewer("user-3", org_id="org-3", org_admin=True)
    everyone = UsageFilter()
    cases = [
        ("summary by model, 30 days, Admin", lambda: reports.summary(admin, everyone, month, "model")),
        ("summary by user, 30 days, Org-Admin", lambda: reports.summary(org_admin, everyone, month, "user")),
        (
            "timeseries by day and model, 30 days",
            lambda: reports.timeseries(admin, everyone, month, "day", "model"),
        ),
        (
            "timeseries by hour, 7 days, Team-Admin",
            lambda: reports.timeseries(team_admin, everyone, week, "hour", None),
        ),
        ("top 10 tokens by cost, 30 days", lambda: reports.top(admin, everyone, month, "token", "cost", 10)),
    ]
    results = []
    for label, run in cases:
        await run()  # warm
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            await run()
            times.append((time.perf_counter() - started) * 1000)
        results.append((label, statistics.median(times)))
    analyst.close()
    return results


async def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=200_000, help="events pre-published for the ingest rate"
    )
    parser.add_argument(
        "--batch", type=int, default=SETTINGS.batch_size, help="messages per insert (at most)"
    )
    parser.add_argument("--per-message", type=int, default=100, help="events per message, batched run")
    parser.add_argument("--rows", type=int, default=10_000_000, help="usage rows for the report queries")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="aqueduct-bench-") as folder:
        bus = EmbeddedNats(Path(folder) / "nats").start()
        engine = ClickHouse(embedded_dsn(Path(folder) / "chdb"))
        try:
            migrate_and_repair(engine, default_migrations_dir())  # as accounting starts: its merge policy
            ingest = await measure_ingest(engine, bus.url, args.events, args.batch)
            batched = await measure_batched_ingest(engine, bus.url, args.events, args.per_message)
            generated = generate(engine, args.rows)
            await asyncio.sleep(1.0)  # the generated rows' second is whole: all of them can be rolled up
            rolled = roll_up_all(engine)
            total = _count(engine)
            queries = await measure_queries(engine)
        finally:
            engine.close()
            bus.stop()

    load = os.getloadavg()[0]
    print(f"\n## Accounting benchmark ({os.cpu_count()} cores, load average {load:.1f}, chDB, one process)\n")
    print("| measurement | result |")
    print("|---|---|")
    print(
        f"| ingest JetStream -> ClickHouse, {args.per_message} events per message (as the proxy publishes) | "
        f"{batched['rate']:,.0f} events/s ({args.events:,} events in {batched['seconds']:.2f} s; "
        f"{batched['cpu_us']:.0f} CPU-µs per event) |"
    )
    print(
        f"| ingest JetStream -> ClickHouse, one event per message | "
        f"{ingest['ingest_rate']:,.0f} events/s ({args.events:,} events in {ingest['ingest_seconds']:.2f} s; "
        f"{ingest['cpu_us']:.0f} CPU-µs per event, all threads) |"
    )
    print(
        f"| publish-to-row delay at 2,000 events/s | p50 {ingest['p50']:.0f} ms, p99 {ingest['p99']:.0f} ms |"
    )
    print(f"| generate {args.rows:,} usage rows (INSERT ... SELECT) | {generated:.1f} s |")
    print(
        f"| roll them up (accounting's roll-ups, steps of {MAX_EVENTS_PER_ROLLUP:,} events; parts merged) | {rolled:.1f} s |"
    )
    for label, p50 in queries:
        print(f"| {label}, over {total:,} rows (p50) | {p50:.1f} ms |")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
