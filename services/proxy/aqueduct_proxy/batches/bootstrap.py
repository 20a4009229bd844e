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
from dataclasses import dataclass, field

from aiohttp import web
from nats.aio.client import Client as NATS
from redis.asyncio import Redis

from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.bus import KVWatcher, ensure_topology
from aqueduct_libs.logs import configure_logging
from aqueduct_libs.price_catalog import load_price_catalog
from aqueduct_proxy.adapters.budget_store import BudgetStore
from aqueduct_proxy.adapters.limiter import Limiter
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.adapters.upstream import Cooldown, EgressProxies, UpstreamClient
from aqueduct_proxy.application.gateway import Gateway, GatewayConfig
from aqueduct_proxy.batches.health import health_app
from aqueduct_proxy.batches.settings import BatchWorkerSettings
from aqueduct_proxy.batches.store import BatchStore, batch_lines_publisher
from aqueduct_proxy.batches.worker import BatchWorker
from aqueduct_proxy.bootstrap import budgeting
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.files.store import FileStore
from aqueduct_proxy.jupyterhub.users import USER_GRANT_KEYS, UserGrants
from aqueduct_proxy.metrics import ProxyMetrics

__all__ = ["WorkerProcess", "bootstrap", "run", "serve"]

log = logging.getLogger(__name__)


@dataclass
class WorkerProcess:
    """The batch worker as a ``Service``: its health and metrics app, the line consumer and finalizer
    (started once the snapshot is loaded: without it every line would look like a revoked token)."""

    worker: BatchWorker
    nc: NATS
    watchers: list[KVWatcher]
    app: web.Application = field(default_factory=web.Application)
    consume: bool = True  # run queued lines once started (tests drive the worker themselves without)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def ready(self) -> bool:
        return self.nc.is_connected and all(w.ready.is_set() for w in self.watchers) and self.worker.consuming

    async def start(self) -> None:
        for watcher in self.watchers:
            watcher.start()
        if self.consume:
            self.tasks.append(asyncio.create_task(self._consume_when_loaded(), name="batch-lines"))

    async def _consume_when_loaded(self) -> None:
        await asyncio.gather(*(w.ready.wait() for w in self.watchers))
        log.info("batch worker ready (concurrency %d)", self.worker.settings.concurrency)
        await asyncio.gather(self.worker.consume(), self.worker.finalize_loop())

    async def stop(self) -> None:
        """Run no more lines, finish those in flight, then let go of the connections."""
        self.worker.stop()
        await self.worker.drain()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for watcher in self.watchers:
            await watcher.stop()
        await self.worker.gateway.upstream.close()
        if self.worker.gateway.limiter is not None:
            await self.worker.gateway.limiter.close()
        with contextlib.suppress(Exception):
            await self.worker.broker.stop()
            await self.nc.close()


async def bootstrap(settings: BatchWorkerSettings, *, consume: bool = True) -> WorkerProcess:
    """The worker on the proxy's gateway and its stores; ``start`` loads the snapshot, then consumes."""
    batch, proxy, files_settings, common = settings.batch, settings.proxy, settings.files, settings.common
    broker = new_broker(common.nats_url, "aqueduct-batch-worker")
    await broker.start()  # its subscriber is added by ``BatchWorker.consume``, once the snapshot is loaded
    nc = broker.connection
    js = nc.jetstream()
    await ensure_topology(js, common.nats_replicas)
    replicas = common.nats_replicas
    store = BatchStore(
        js,
        lines=batch_lines_publisher(broker),
        replicas=batch.replicas or replicas,
        results_max_age_days=batch.results_max_age_days,
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
        pool_size=max(16, batch.concurrency * 2),
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
    worker = BatchWorker(store, files, gateway, batch, broker, users)
    process = WorkerProcess(worker, nc, [], consume=consume)
    process.app = health_app(worker, process.ready, metrics.registry)

    process.watchers = [
        KVWatcher(js, names.AUTH_SNAPSHOT_BUCKET, snapshot.on_snapshot_put, snapshot.on_snapshot_delete),
        # Users' own grants: the lines of a batch created with a JupyterHub token run under them.
        KVWatcher(
            js, names.AUTH_SNAPSHOT_BUCKET, users.on_user_put, users.on_user_delete, keys=USER_GRANT_KEYS
        ),
        KVWatcher(js, names.QUOTA_BUCKET, snapshot.on_quota_put, snapshot.on_quota_delete),
        KVWatcher(js, names.BATCHES_BUCKET, process.worker.on_batch_put, process.worker.on_batch_delete),
    ]
    return process


async def serve(settings: BatchWorkerSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    process = await bootstrap(settings)
    # Up before the snapshot has loaded: /healthz answers at once, /readyz says 503 until consuming.
    runner = web.AppRunner(process.app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        await runner.cleanup()
        await process.stop()
        raise SystemExit(
            f"batch worker: cannot serve health and metrics on {settings.host}:{settings.port} "
            f"({exc.strerror}); set AQUEDUCT_BATCH_WORKER_PORT (one per worker process on the same host)"
        ) from exc
    log.info("batch worker health on http://%s:%d/readyz", settings.host, settings.port)
    await process.start()
    await stop.wait()
    log.info("batch worker stopping: finishing lines in flight")
    await process.stop()
    await runner.cleanup()


def run() -> None:
    settings = BatchWorkerSettings()  # fails fast on insecure settings
    configure_logging("batch-worker", settings.common.log_level)
    asyncio.run(serve(settings))
