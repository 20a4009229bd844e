"""Wiring of the batch worker process (``python -m aqueduct_proxy.batches``).

It uses the proxy's own gateway (snapshot, limiter, upstream client with retries and fallbacks), so a
batch line is routed, limited and budgeted exactly as the same request sent to the proxy would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass

from aiohttp import web
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.bus import KVWatcher, ensure_topology
from aqueduct_libs.logs import configure_logging
from aqueduct_libs.price_catalog import load_price_catalog
from aqueduct_libs.settings import CommonSettings
from aqueduct_proxy.adapters.budget_store import BudgetStore
from aqueduct_proxy.adapters.limiter import Limiter
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.adapters.upstream import Cooldown, EgressProxies, UpstreamClient
from aqueduct_proxy.application.gateway import Gateway, GatewayConfig
from aqueduct_proxy.batches.health import health_app
from aqueduct_proxy.batches.settings import BatchSettings, BatchWorkerSettings
from aqueduct_proxy.batches.store import BatchStore
from aqueduct_proxy.batches.worker import BatchWorker
from aqueduct_proxy.bootstrap import budgeting
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore
from aqueduct_proxy.jupyterhub.users import USER_GRANT_KEYS, UserGrants
from aqueduct_proxy.metrics import ProxyMetrics
from aqueduct_proxy.settings import ProxySettings

__all__ = ["WorkerProcess", "bootstrap", "run", "serve"]

log = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    worker: BatchWorker
    nc: NATS
    watchers: list[KVWatcher]

    @property
    def ready(self) -> bool:
        return self.nc.is_connected and all(w.ready.is_set() for w in self.watchers) and self.worker.consuming

    async def close(self) -> None:
        for watcher in self.watchers:
            await watcher.stop()
        await self.worker.gateway.upstream.close()
        if self.worker.gateway.limiter is not None:
            await self.worker.gateway.limiter.close()
        with contextlib.suppress(Exception):
            await self.worker.broker.stop()
            await self.nc.close()


async def bootstrap(
    settings: BatchSettings, proxy: ProxySettings, files_settings: FilesSettings, common: CommonSettings
) -> WorkerProcess:
    broker = new_broker(common.nats_url, "aqueduct-batch-worker")
    await broker.start()  # its subscriber is added by ``BatchWorker.consume``, once the snapshot is loaded
    nc = broker.connection
    js = nc.jetstream()
    await ensure_topology(js, common.nats_replicas)
    replicas = common.nats_replicas
    store = BatchStore(
        js, replicas=settings.replicas or replicas, results_max_age_days=settings.results_max_age_days
    )
    await store.start()
    files = FileStore(
        js,
        quota_bytes_per_user=files_settings.quota_bytes_per_user,
        replicas=files_settings.replicas or replicas,
    )
    await files.start()
    snapshot = Snapshot(await asyncio.to_thread(load_price_catalog))
    upstream = UpstreamClient(
        pool_size=max(16, settings.concurrency * 2),
        timeout=proxy.upstream_timeout_seconds,
        connect_timeout=proxy.upstream_connect_timeout_seconds,
        egress=EgressProxies(os.environ),  # HTTP(S)_PROXY / NO_PROXY of an organisation's egress
        client=proxy.upstream_client,
    )
    await upstream.start()
    limiter = budgets = None
    if proxy.redis_url:
        redis = Redis.from_url(
            proxy.redis_url,
            socket_timeout=proxy.redis_timeout_seconds,
            socket_connect_timeout=proxy.redis_timeout_seconds,
        )
        limiter = Limiter(redis)
        budgets = BudgetStore(redis, hold_seconds=proxy.budget_hold_seconds)
    metrics = ProxyMetrics()
    gateway = Gateway(
        GatewayConfig(
            secret_key=common.secret_key_bytes,
            public_ui_url=common.public_ui_url,
            fail_open=proxy.limits_on_store_failure == "open",
            retries=proxy.retries,
            retry_backoff=proxy.retry_backoff_seconds,
        ),
        snapshot,
        upstream,
        None,
        limiter,
        TokenCounter(proxy.tokenizer_encoding),
        Cooldown(proxy.cooldown_failures, proxy.cooldown_window_seconds, proxy.cooldown_seconds),
        metrics,
        budgeting=budgeting(proxy, snapshot, budgets, metrics),
    )
    users = UserGrants()
    process = WorkerProcess(BatchWorker(store, files, gateway, settings, broker, users), nc, [])

    process.watchers = [
        KVWatcher(js, names.AUTH_SNAPSHOT_BUCKET, snapshot.on_snapshot_put, snapshot.on_snapshot_delete),
        # Users' own grants: the lines of a batch created with a JupyterHub token run under them.
        KVWatcher(
            js, names.AUTH_SNAPSHOT_BUCKET, users.on_user_put, users.on_user_delete, keys=USER_GRANT_KEYS
        ),
        KVWatcher(js, names.QUOTA_BUCKET, snapshot.on_quota_put, snapshot.on_quota_delete),
        KVWatcher(js, names.BATCHES_BUCKET, process.worker.on_batch_put, process.worker.on_batch_delete),
    ]
    for watcher in process.watchers:
        watcher.start()
    return process


async def serve(stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    process = await bootstrap(BatchSettings(), ProxySettings(), FilesSettings(), CommonSettings())
    http = BatchWorkerSettings()
    # Up before the snapshot has loaded: /healthz answers at once, /readyz says 503 until consuming.
    runner = web.AppRunner(
        health_app(process.worker, lambda: process.ready, process.worker.gateway.metrics.registry),
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, http.host, http.port).start()
    except OSError as exc:
        await runner.cleanup()
        await process.close()
        raise SystemExit(
            f"batch worker: cannot serve health and metrics on {http.host}:{http.port} ({exc.strerror}); "
            "set AQUEDUCT_BATCH_WORKER_PORT (one per worker process on the same host)"
        ) from exc
    log.info("batch worker health on http://%s:%d/readyz", http.host, http.port)
    # Without the snapshot every line would look like a revoked token: wait for it before consuming.
    await asyncio.gather(*(w.ready.wait() for w in process.watchers))
    log.info("batch worker ready (concurrency %d)", process.worker.settings.concurrency)
    tasks = [
        asyncio.create_task(process.worker.consume()),
        asyncio.create_task(process.worker.finalize_loop()),
    ]
    await stop.wait()
    log.info("batch worker stopping: finishing lines in flight")
    process.worker.stop()
    await process.worker.drain()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    await process.close()


def run() -> None:
    common = CommonSettings()  # fail fast on insecure settings
    configure_logging("batch-worker", common.log_level)
    asyncio.run(serve())
