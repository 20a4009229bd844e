"""The one wiring function of the accounting service, and ``run()``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, open_clickhouse
from aqueduct_accounting.adapters.kv_views import watch_jwks, watch_model_prices
from aqueduct_accounting.adapters.metrics import AccountingMetrics
from aqueduct_accounting.adapters.migrations import apply_migrations
from aqueduct_accounting.adapters.price_catalog import load_price_catalog
from aqueduct_accounting.application.ingest import UsageIngest
from aqueduct_accounting.application.reports import Reports
from aqueduct_accounting.domain.pricing import PriceBook
from aqueduct_accounting.entrypoints.http import HttpDeps, create_app
from aqueduct_accounting.entrypoints.usage_consumer import UsageConsumer
from aqueduct_accounting.settings import AccountingSettings, default_migrations_dir
from aqueduct_libs.bus import KVWatcher, connect, ensure_topology
from aqueduct_libs.ops import configure_logging
from aqueduct_libs.sessions import SessionVerifier
from aqueduct_libs.settings import CommonSettings

__all__ = ["Service", "build", "run"]

log = logging.getLogger(__name__)


@dataclass
class Service:
    """Everything the process runs, started and stopped in order."""

    settings: AccountingSettings
    common: CommonSettings
    engine: ClickHouse
    nc: NATS
    app: FastAPI
    consumer: UsageConsumer
    watchers: list[KVWatcher] = field(default_factory=list)
    migrated: bool = False

    def ready(self) -> bool:
        return self.migrated and self.nc.is_connected and self.consumer.running.is_set()

    async def start(self) -> None:
        for watcher in self.watchers:
            watcher.start()
        await self.consumer.start()

    async def stop(self) -> None:
        log.info("stopping: flushing the batch in hand")
        await self.consumer.stop()
        for watcher in self.watchers:
            await watcher.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        self.engine.close()


async def build(settings: AccountingSettings, common: CommonSettings) -> Service:
    """Wire the real adapters: ClickHouse (migrated), NATS, the consumers, the HTTP app."""
    engine = open_clickhouse(settings.clickhouse_url, common.data_dir)
    await asyncio.to_thread(apply_migrations, engine, settings.migrations_dir or default_migrations_dir())
    clickhouse = AsyncClickHouse(engine)

    nc = await connect(common.nats_url, "aqueduct-accounting")
    js = nc.jetstream()
    await ensure_topology(js)

    metrics = AccountingMetrics()
    prices = PriceBook(await asyncio.to_thread(load_price_catalog))
    verifier = SessionVerifier()
    consumer = UsageConsumer(
        js,
        UsageIngest(clickhouse, prices),
        metrics,
        durable=settings.consumer_name,
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval_seconds,
        max_ack_pending=settings.max_ack_pending,
        ack_wait=settings.ack_wait_seconds,
    )
    service_ref: list[Service] = []
    app = create_app(
        HttpDeps(
            reports=Reports(clickhouse, settings.sql_max_rows),
            verifier=verifier,
            ready=lambda: bool(service_ref) and service_ref[0].ready(),
            registry=metrics.registry,
        )
    )
    service = Service(
        settings=settings,
        common=common,
        engine=engine,
        nc=nc,
        app=app,
        consumer=consumer,
        watchers=[watch_model_prices(js, prices), watch_jwks(js, verifier)],
        migrated=True,
    )
    service_ref.append(service)
    app.state.deps.on_start = service.start
    app.state.deps.on_stop = service.stop
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
