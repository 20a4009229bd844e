"""The one wiring function of the accounting service, and ``run()``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from aqueduct_accounting.adapters.api_tokens import ApiTokenViewers
from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, open_clickhouse
from aqueduct_accounting.adapters.kv_views import watch_jwks, watch_model_prices
from aqueduct_accounting.adapters.metrics import AccountingMetrics
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.adapters.price_catalog import load_price_catalog
from aqueduct_accounting.adapters.quota_kv import QuotaBucket
from aqueduct_accounting.adapters.spend_counters import SpendCounters
from aqueduct_accounting.application.budgets import BudgetEnforcer
from aqueduct_accounting.application.directory_mirror import DirectoryMirror
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.application.reports import Reports
from aqueduct_accounting.application.rollups import repair_rollups
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.domain.usage import usage_rows_from_json
from aqueduct_accounting.entrypoints.http import HttpDeps, create_app
from aqueduct_accounting.entrypoints.stream_consumer import BatchConsumer
from aqueduct_accounting.settings import AccountingSettings, default_migrations_dir
from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher, connect, ensure_topology
from aqueduct_libs.events import DirectoryEvent
from aqueduct_libs.ops import configure_logging
from aqueduct_libs.sessions import SessionVerifier, watch_revoked_sessions
from aqueduct_libs.settings import CommonSettings

__all__ = ["Service", "build", "run", "serve"]

log = logging.getLogger(__name__)


@dataclass
class Service:
    """Everything the process runs, started and stopped in order."""

    engine: ClickHouse
    nc: NATS
    app: FastAPI
    consumers: list[BatchConsumer[Any]]
    budgets: BudgetEnforcer
    budget_interval: float
    watchers: list[KVWatcher] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def ready(self) -> bool:
        # The watchers' first load included: a signed-out session is refused from the first request.
        return (
            self.nc.is_connected
            and all(c.running.is_set() for c in self.consumers)
            and all(w.ready.is_set() for w in self.watchers)
        )

    async def start(self) -> None:
        for watcher in self.watchers:
            watcher.start()
        for consumer in self.consumers:
            await consumer.start()
        self.tasks.append(asyncio.create_task(self.budgets.run(self.budget_interval), name="budgets"))

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
            await self.nc.drain()
        self.engine.close()


async def build(settings: AccountingSettings, common: CommonSettings) -> Service:
    """Wire the real adapters: ClickHouse (migrated), NATS, the consumers, the budget loop, the HTTP app."""
    engine = open_clickhouse(settings.clickhouse_url, common.data_dir)
    await asyncio.to_thread(apply_migrations, engine, settings.migrations_dir or default_migrations_dir())
    # Before consuming: a crash may have left roll-ups short of the last events stored.
    await asyncio.to_thread(repair_rollups, engine)
    clickhouse = AsyncClickHouse(engine)

    nc = await connect(common.nats_url, "aqueduct-accounting")
    js = nc.jetstream()
    await ensure_topology(js)

    metrics = AccountingMetrics()
    prices = PriceBook(await asyncio.to_thread(load_price_catalog))
    verifier = SessionVerifier()
    # The proxies' budget counters in Valkey, reconciled from ClickHouse (none configured: not reconciled).
    counters = SpendCounters.from_url(settings.redis_url) if settings.redis_url else None
    budgets = BudgetEnforcer(
        clickhouse,
        QuotaBucket(js),
        on_decisions=metrics.quota_decisions.set,
        counters=counters,
        reconcile_seconds=settings.budget_reconcile_seconds,
        on_reconciled=metrics.budget_reconciliations.inc,
    )
    ingest = UsageIngest(
        clickhouse,
        prices,
        window_seconds=settings.recent_ids_seconds,
        max_recent_ids=settings.recent_ids_max,
    )
    mirror = DirectoryMirror(clickhouse)

    async def store_usage(messages: list[list[dict[str, Any]]]) -> None:
        rows = [row for rows in messages for row in rows]
        metrics.batch_size.observe(len(rows))
        result = await ingest.ingest_rows(rows)
        metrics.ingested.inc(result.inserted)
        metrics.duplicates.inc(result.duplicates)
        if result.inserted:
            budgets.usage_stored(result.stored)

    def usage_stored(_messages: int, seconds: float) -> None:
        metrics.insert_seconds.observe(seconds)

    async def store_directory(events: list[DirectoryEvent]) -> None:
        metrics.directory_events.inc(await mirror.store(events))

    common_options: dict[str, Any] = {
        "flush_interval": settings.flush_interval_seconds,
        "max_ack_pending": settings.max_ack_pending,
        "ack_wait": settings.ack_wait_seconds,
        "on_store_failed": metrics.insert_failures.inc,
    }
    consumers: list[BatchConsumer[Any]] = [
        BatchConsumer(
            nc,
            js,
            stream=names.USAGE_STREAM,
            subject=names.USAGE_SUBJECT,
            durable=settings.consumer_name,
            decode=usage_rows_from_json,
            store=store_usage,
            batch_size=settings.batch_size,
            batch_bytes=settings.batch_bytes,
            on_stored=usage_stored,
            on_rejected=metrics.rejected.inc,
            on_lag=metrics.lag.set,
            store_interval=settings.store_interval_seconds,
            **common_options,
        ),
        BatchConsumer(
            nc,
            js,
            stream=names.DIRECTORY_EVENTS_STREAM,
            subject=f"{names.DIRECTORY_EVENTS_SUBJECT_PREFIX}.>",
            durable=settings.directory_consumer_name,
            decode=DirectoryEvent.model_validate_json,
            store=store_directory,
            batch_size=1000,
            **common_options,
        ),
    ]
    ready_check: list[Service] = []
    api_tokens = ApiTokenViewers(common.directory_url)
    app = create_app(
        HttpDeps(
            reports=Reports(clickhouse, settings.sql_max_rows),
            verifier=verifier,
            ready=lambda: bool(ready_check) and ready_check[0].ready(),
            registry=metrics.registry,
            api_tokens=api_tokens,
            budgets=budgets,
        )
    )
    service = Service(
        engine=engine,
        nc=nc,
        app=app,
        consumers=consumers,
        budgets=budgets,
        budget_interval=settings.budget_check_seconds,
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
        ],
    )
    ready_check.append(service)

    async def stop() -> None:
        await service.stop()
        await api_tokens.close()
        if counters is not None:
            await counters.close()

    app.state.deps.on_start = service.start
    app.state.deps.on_stop = stop
    return service


async def serve(settings: AccountingSettings, common: CommonSettings) -> None:
    service = await build(settings, common)
    config = uvicorn.Config(
        service.app,
        host=settings.host,
        port=settings.port,
        log_level=common.log_level.lower(),
        log_config=None,
        lifespan="on",
    )
    # The app's lifespan starts the consumers and, on SIGTERM / SIGINT, flushes and stops them.
    await uvicorn.Server(config).serve()


def run() -> None:
    common = CommonSettings()
    settings = AccountingSettings()
    configure_logging("accounting", common.log_level)
    asyncio.run(serve(settings, common))
