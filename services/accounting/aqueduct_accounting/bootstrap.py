"""The one wiring function of the accounting service, and ``run()``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from aqueduct_accounting.adapters.analyst_sql import AnalystQueries, QueryLimits, open_analyst
from aqueduct_accounting.adapters.api_tokens import ApiTokenViewers
from aqueduct_accounting.adapters.clickhouse import (
    AsyncClickHouse,
    ClickHouse,
    ClickHouseError,
    open_clickhouse,
)
from aqueduct_accounting.adapters.dead_letters import DeadLetters
from aqueduct_accounting.adapters.kv_views import watch_jwks, watch_model_prices
from aqueduct_accounting.adapters.metrics import AccountingMetrics
from aqueduct_accounting.adapters.migrations import existing_tables, expected_tables
from aqueduct_accounting.adapters.price_catalog import load_price_catalog
from aqueduct_accounting.adapters.quota_kv import QuotaBucket
from aqueduct_accounting.adapters.spend_counters import SpendCounters
from aqueduct_accounting.application.budgets import BudgetEnforcer
from aqueduct_accounting.application.dead_letters import DeadLetterAdmin
from aqueduct_accounting.application.directory_mirror import DirectoryMirror
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.application.ingest_health import IngestHealth
from aqueduct_accounting.application.quarantine import quarantine_out_of_bounds
from aqueduct_accounting.application.reports import Reports
from aqueduct_accounting.application.rollups import RollupGate, prune_marks, roll_up
from aqueduct_accounting.application.self_repair import migrate_and_repair
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.usage import (
    UsageMessage,
    row_cost,
    usage_message_from_json,
    usage_message_parts,
)
from aqueduct_accounting.entrypoints.dead_letter_path import DeadLetterPolicy
from aqueduct_accounting.entrypoints.http import HttpDeps, create_app
from aqueduct_accounting.entrypoints.server import QuietServer
from aqueduct_accounting.entrypoints.stream_consumer import BatchConsumer, StreamBroker
from aqueduct_accounting.settings import AccountingSettings, default_migrations_dir
from aqueduct_libs import names
from aqueduct_libs.broker import SPEC_URL
from aqueduct_libs.bus import KVWatcher, connect, ensure_topology
from aqueduct_libs.current_roles import CurrentRoles
from aqueduct_libs.events import DirectoryEvent, UsageRecorded
from aqueduct_libs.ops import configure_logging
from aqueduct_libs.sessions import SessionVerifier, watch_revoked_sessions

__all__ = [
    "AccountingService",
    "asyncapi_broker",
    "bootstrap",
    "directory_consumer",
    "run",
    "serve",
    "usage_consumer",
    "usage_reader",
]

log = logging.getLogger(__name__)
# Roll-up marks older than a day are deleted at the first round after start and then this often.
MARKS_PRUNE_INTERVAL = 6 * 3600.0

_NEWEST = "SELECT count(), toString(max(occurred_at)) FROM usage_events"


@dataclass
class AccountingService:
    """Everything the process runs, started and stopped in order."""

    engine: ClickHouse
    broker: NatsBroker
    nc: NATS
    app: FastAPI
    consumers: list[BatchConsumer[Any]]
    budgets: BudgetEnforcer
    budget_interval: float
    health: IngestHealth
    ingest: UsageIngest
    gate: RollupGate
    lag_interval: float = 2.0
    rollup_interval: float = 10.0
    # After a table was lost: the budget loop waits until the replays that refill it caught up, or
    # budgets (or spend) read from a half-refilled table would lift decisions that still hold.
    replaying: list[BatchConsumer[Any]] = field(default_factory=list)
    watchers: list[KVWatcher] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Other engine connections (the read-only analyst's), closed with the engine: chDB keeps one embedded
    # server per process, on one folder, until its last connection is closed.
    closers: list[Callable[[], None]] = field(default_factory=list)

    def not_ready_reasons(self) -> list[str]:
        reasons = [] if self.nc.is_connected else ["not connected to NATS"]
        reasons += [f"{c.durable}: not consuming yet" for c in self.consumers if not c.running.is_set()]
        # The watchers' first load included: a signed-out session is refused from the first request.
        reasons += [
            "session keys, users or prices not loaded yet" for w in self.watchers if not w.ready.is_set()
        ][:1]
        return reasons + self.health.problems()

    def ready(self) -> bool:
        return not self.not_ready_reasons()

    async def start(self) -> None:
        for watcher in self.watchers:
            watcher.start()
        for consumer in self.consumers:
            await consumer.start()
        self.tasks.append(asyncio.create_task(self._run_budgets(), name="budgets"))
        self.tasks.append(asyncio.create_task(self.health.run(self.lag_interval), name="ingest-health"))
        self.tasks.append(asyncio.create_task(self._run_rollups(), name="rollups"))
        # What start-up made (modules, clients, settings: about 140,000 objects) lives as long as the process:
        # moved out of the collector's generations (gc.freeze), so that the collections a steady stream of
        # usage causes walk only what it allocates, not all of that again each time.
        gc.collect()
        gc.freeze()

    async def _run_rollups(self) -> None:
        """Roll up what was stored, every ``rollup_interval`` (at once at start: what an earlier run left
        in the tail), in steps while there is more than one roll-up holds."""
        clickhouse = AsyncClickHouse(self.engine)
        pruned_at: float | None = None  # old marks: pruned at the first round, then every interval
        while True:
            try:
                await self.ingest.ready()
                for _ in range(1000):  # a bound on one round of steps: the next round goes on
                    async with self.gate.writing():
                        rolled = await clickhouse.run(roll_up, self.ingest.store_clock.stored_through())
                    if not rolled:
                        break
                if pruned_at is None or time.monotonic() - pruned_at >= MARKS_PRUNE_INTERVAL:
                    pruned_at = time.monotonic()  # a failure is tried again at the next interval, not sooner
                    try:
                        pruned = await clickhouse.run(prune_marks)
                    except ClickHouseError as exc:
                        log.warning(
                            "deleting old roll-up marks failed (harmless; tried again later): %s", exc
                        )
                    else:
                        if pruned:
                            log.info("deleted %d roll-up marks older than a day before the latest", pruned)
            except ClickHouseError as exc:
                log.warning("rolling up usage failed (retried; reports still count every event): %s", exc)
            await asyncio.sleep(self.rollup_interval)

    async def _run_budgets(self) -> None:
        for consumer in self.replaying:
            for _ in range(600):  # at most a minute each; the consumer's lag is read from the bus
                with contextlib.suppress(Exception):
                    if await consumer.pending() == 0:
                        break
                await asyncio.sleep(0.1)
            log.info("%s is refilled from its stream; budgets are checked from now", consumer.stream)
        await self.budgets.run(self.budget_interval)

    async def stop(self) -> None:
        log.info("stopping: flushing the batches in hand")
        for consumer in self.consumers:
            await consumer.stop()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watcher in self.watchers:
            await watcher.stop()
        with contextlib.suppress(Exception):
            await self.broker.stop()  # drains the connection
        for close in self.closers:
            close()
        self.closers = []
        self.engine.close()


async def bootstrap(settings: AccountingSettings) -> AccountingService:
    """Wire the real adapters: ClickHouse (migrated), NATS, the consumers, the budget loop, the HTTP app."""
    common = settings.common
    engine = open_clickhouse(settings.clickhouse_url, common.data_dir)
    # Self-repair: whatever table is missing is created again, whatever copy of a stream was lost is
    # refilled by replaying the stream (its consumer starts over, below).
    repair = await asyncio.to_thread(
        migrate_and_repair,
        engine,
        settings.migrations_dir or default_migrations_dir(),
        settings.merge_selector_base or None,
    )
    clickhouse = AsyncClickHouse(engine)
    limits = QueryLimits(settings.sql_max_rows, settings.sql_max_bytes, settings.sql_max_seconds)
    analyst = AnalystQueries(
        open_analyst(settings.clickhouse_url, settings.analyst_clickhouse_url, common.data_dir, limits)
    )

    broker = StreamBroker(lambda: connect(common.nats_url, "aqueduct-accounting"))
    nc = await broker.connect()
    js = nc.jetstream()
    await ensure_topology(js, common.nats_replicas)
    for replay, stream, durable in (
        (repair.replay_usage, names.USAGE_STREAM, settings.consumer_name),
        (repair.replay_directory, names.DIRECTORY_EVENTS_STREAM, settings.directory_consumer_name),
    ):
        if replay:
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(stream, durable)
                log.warning("replaying the %s stream from its start into ClickHouse", stream)
    metrics = AccountingMetrics()
    dead_letters = DeadLetters(broker, on_sent=lambda _stream: metrics.dead_letters.inc())
    # Before consuming: rows a version without bounds stored out of them go to the dead letters (it may
    # not stop the start). What a crash left not rolled up is in the roll-up views' tail already.
    try:
        await quarantine_out_of_bounds(clickhouse, dead_letters, settings.consumer_name)
    except ClickHouseError:
        log.exception("repairing the stored usage failed; starting anyway")

    prices = PriceBook(await asyncio.to_thread(load_price_catalog))
    verifier = SessionVerifier()
    # The proxies' budget counters in Valkey, reconciled from ClickHouse (none configured: not reconciled).
    counters = SpendCounters.from_url(settings.redis_url) if settings.redis_url else None
    # Reports, budget reconciliation and SQL read the roll-ups and their tail; roll-ups wait for them.
    gate = RollupGate()
    ingest = UsageIngest(
        clickhouse,
        prices,
        window_seconds=settings.recent_ids_seconds,
        max_recent_ids=settings.recent_ids_max,
    )
    budgets = BudgetEnforcer(
        clickhouse,
        QuotaBucket(js),
        gate=gate,
        on_decisions=metrics.quota_decisions.set,
        counters=counters,
        reconcile_seconds=settings.budget_reconcile_seconds,
        on_reconciled=metrics.budget_reconciliations.inc,
        stored_already=ingest.stored_recently,
    )
    mirror = DirectoryMirror(clickhouse)
    health = IngestHealth([], settings.ready_max_lag, settings.ready_stuck_seconds)
    with contextlib.suppress(ClickHouseError):  # the age metric starts from what is stored
        stored, newest = (await clickhouse.query(_NEWEST)).rows[0]
        if int(stored):
            health.usage_stored(str(newest))

    read_usage = usage_reader(prices)

    async def store_usage(messages: list[UsageMessage]) -> None:
        rows = [row for message in messages for row in message.rows]
        metrics.batch_size.observe(len(rows))
        async with budgets.storing():  # no reconciliation reads between the insert and its count
            result = await ingest.ingest_rows(rows)
            budgets.usage_stored(result.stored, rows)
        metrics.ingested.inc(result.inserted)
        metrics.duplicates.inc(result.duplicates)
        if rows:
            health.usage_stored(max(row["occurred_at"] for row in rows))

    def usage_stored(_messages: int, seconds: float) -> None:
        metrics.insert_seconds.observe(seconds)

    async def store_directory(events: list[DirectoryEvent]) -> None:
        metrics.directory_events.inc(await mirror.store(events))

    wanted_tables = expected_tables(settings.migrations_dir or default_migrations_dir())

    async def engine_works() -> bool:
        # An insert into usage_events also writes its roll-ups: any table gone fails every insert, as
        # does an engine that cannot write (a full disk). Then the engine, not a message, is at fault:
        # nothing is dead-lettered, the batch is retried (and /readyz says so); a restart recreates tables.
        if not wanted_tables <= await asyncio.to_thread(existing_tables, engine):
            return False
        await clickhouse.execute("INSERT INTO ingest_probe (at) VALUES (now64(3))")
        return True

    common_options: dict[str, Any] = {"on_store_failed": metrics.insert_failures.inc}

    def rows_of(messages: list[UsageMessage]) -> list[dict[str, Any]]:
        return [row for message in messages for row in message.rows]

    usage = usage_consumer(
        broker,
        settings,
        read_usage,
        store_usage,
        on_stored=usage_stored,
        # Budgets count what is read at once, and stop counting it as held when its store is over.
        on_delivered=lambda messages: budgets.usage_held(rows_of(messages)),
        on_flushed=lambda messages: budgets.usage_released(rows_of(messages)),
        on_rejected=metrics.rejected.inc,
        dead_letters=DeadLetterPolicy(
            dead_letters,
            max_tries=settings.store_max_tries,
            rejected_of=lambda message: message.rejected,
            split=lambda payload: usage_message_parts(payload, read_usage),
            healthy=engine_works,
        ),
        **common_options,
    )
    directory = directory_consumer(
        broker,
        settings,
        mirror.read,
        store_directory,
        dead_letters=DeadLetterPolicy(dead_letters, max_tries=settings.store_max_tries, healthy=engine_works),
        **common_options,
    )
    consumers: list[BatchConsumer[Any]] = [usage, directory]
    health.consumers = consumers
    lag_gauges = {
        settings.consumer_name: metrics.lag,
        settings.directory_consumer_name: metrics.directory_lag,
    }
    health.on_lag = lambda durable, lag: lag_gauges[durable].set(lag)
    health.count_letters = dead_letters.count
    health.on_letters = metrics.dead_letters_waiting.set
    metrics.last_stored_age.set_function(health.newest_event_age)
    metrics.not_ready.set_function(lambda: 1.0 if health.problems() else 0.0)

    def redrive_with(consumer: BatchConsumer[Any]) -> Callable[[bytes], Awaitable[None]]:
        async def redrive(payload: bytes) -> None:
            assert consumer.guard is not None
            await consumer.guard.redrive(consumer.decode(payload))

        return redrive

    dead_letter_admin = DeadLetterAdmin(
        dead_letters,
        {c.stream: redrive_with(c) for c in consumers},
        on_redriven=metrics.redriven.inc,
    )
    ready_check: list[AccountingService] = []
    api_tokens = ApiTokenViewers(common.directory_url)
    roles = CurrentRoles()
    app = create_app(
        HttpDeps(
            reports=Reports(
                clickhouse, analyst, settings.sql_max_rows, gate, ingest.store_clock.newest_stamp
            ),
            verifier=verifier,
            roles=roles,
            ready=lambda: bool(ready_check) and ready_check[0].ready(),
            registry=metrics.registry,
            api_tokens=api_tokens,
            budgets=budgets,
            not_ready_reasons=lambda: ready_check[0].not_ready_reasons() if ready_check else ["starting"],
            dead_letters=dead_letter_admin,
        )
    )
    service = AccountingService(
        engine=engine,
        broker=broker,
        nc=nc,
        app=app,
        consumers=consumers,
        budgets=budgets,
        budget_interval=settings.budget_check_seconds,
        health=health,
        lag_interval=settings.lag_check_seconds,
        ingest=ingest,
        gate=gate,
        rollup_interval=settings.rollup_interval_seconds,
        replaying=[
            consumer
            for consumer, replay in (
                (usage, repair.replay_usage),
                (directory, repair.replay_directory),
            )
            if replay
        ],
        watchers=[
            watch_model_prices(js, prices),
            # Budget definitions: the directory's snapshot, not a copy accounting could lose.
            KVWatcher(
                js,
                names.AUTH_SNAPSHOT_BUCKET,
                budgets.on_snapshot_put,
                budgets.on_snapshot_delete,
                keys=f"{names.SNAPSHOT_BUDGET_PREFIX}>",
            ),
            watch_jwks(js, verifier),
            watch_revoked_sessions(js, verifier),
            roles.follow(js),
        ],
    )
    ready_check.append(service)
    service.closers.append(analyst.close)

    async def stop() -> None:
        await service.stop()
        await api_tokens.close()
        if counters is not None:
            await counters.close()

    app.state.deps.on_start = service.start
    app.state.deps.on_stop = stop
    return service


def usage_reader(prices: PriceBook) -> Callable[[bytes], UsageMessage]:
    """Accounting's door: a usage message read, every event checked against ``aqueduct_libs.bounds``,
    its cost included."""

    def priced(row: dict[str, Any]) -> int:
        return row_cost(prices, row)

    def read_usage(payload: bytes) -> UsageMessage:
        return usage_message_from_json(payload, cost=priced)

    return read_usage


def usage_consumer(
    broker: NatsBroker,
    settings: AccountingSettings,
    read: Callable[[bytes], UsageMessage],
    store: Callable[[list[UsageMessage]], Awaitable[None]],
    **options: Any,
) -> BatchConsumer[UsageMessage]:
    """The usage events' consumer, declared on ``broker``."""
    return BatchConsumer(
        broker,
        stream=names.USAGE_STREAM,
        subject=names.USAGE_SUBJECT,
        durable=settings.consumer_name,
        decode=read,
        store=store,
        batch_size=settings.batch_size,
        batch_bytes=settings.batch_bytes,
        flush_interval=settings.flush_interval_seconds,
        store_interval=settings.store_interval_seconds,
        handover_interval=settings.store_interval_seconds,
        busy_store_interval=settings.busy_store_interval_seconds,
        busy_store_bytes=settings.busy_store_bytes,
        max_ack_pending=settings.max_ack_pending,
        ack_wait=settings.ack_wait_seconds,
        payload=UsageRecorded | list[UsageRecorded],
        description="The proxies' usage events (a UsageRecorded, or a JSON array of up to 100), counted "
        "exactly once into ClickHouse in batches; what cannot be stored goes to the dead-letter stream.",
        **options,
    )


def directory_consumer(
    broker: NatsBroker,
    settings: AccountingSettings,
    read: Callable[[bytes], DirectoryEvent],
    store: Callable[[list[DirectoryEvent]], Awaitable[None]],
    **options: Any,
) -> BatchConsumer[DirectoryEvent]:
    """The directory's integration events' consumer (names of users, teams, tokens), declared on ``broker``."""
    return BatchConsumer(
        broker,
        stream=names.DIRECTORY_EVENTS_STREAM,
        subject=f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.>",
        durable=settings.directory_consumer_name,
        decode=read,
        store=store,
        batch_size=1000,
        flush_interval=settings.flush_interval_seconds,
        max_ack_pending=settings.max_ack_pending,
        ack_wait=settings.ack_wait_seconds,
        payload=DirectoryEvent,
        description="The directory's integration events, mirrored into ClickHouse for report names.",
        **options,
    )


def asyncapi_broker(settings: AccountingSettings | None = None) -> NatsBroker:
    """A broker with accounting's subscribers and publisher declared as ``bootstrap`` declares them, not
    connected: for
    FastStream's AsyncAPI document."""
    settings = settings or AccountingSettings()
    broker = StreamBroker(
        lambda: connect(SPEC_URL, "aqueduct-accounting"),
        servers=[SPEC_URL],
        specification_url=SPEC_URL,
        description="aqueduct-accounting: usage counted exactly once, budgets, reports",
    )

    async def nowhere(_items: list[Any]) -> None:
        raise RuntimeError("a broker for the AsyncAPI document stores nothing")

    usage_consumer(broker, settings, usage_message_from_json, nowhere)
    directory_consumer(broker, settings, DirectoryEvent.model_validate_json, nowhere)
    DeadLetters(broker)  # its publisher
    return broker


async def serve(settings: AccountingSettings) -> None:
    common = settings.common
    service = await bootstrap(settings)
    config = uvicorn.Config(
        service.app,
        host=settings.host,
        port=settings.port,
        log_level=common.log_level.lower(),
        log_config=None,
        lifespan="on",
    )
    # The app's lifespan starts the consumers and, on SIGTERM / SIGINT, flushes and stops them.
    await QuietServer(config).serve()


def run() -> None:
    settings = AccountingSettings()
    configure_logging("accounting", settings.common.log_level)
    asyncio.run(serve(settings))
