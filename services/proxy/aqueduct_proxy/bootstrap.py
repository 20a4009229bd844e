"""The one wiring function of the proxy, and ``run()`` (what ``python -m aqueduct_proxy`` executes)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from faststream.nats import NatsBroker
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.bus import KVWatcher, ensure_topology
from aqueduct_libs.logs import configure_logging
from aqueduct_libs.price_catalog import load_price_catalog
from aqueduct_libs.redact import redact
from aqueduct_libs.snapshot_push import follow_snapshot_pushes
from aqueduct_proxy.adapters.budget_store import BudgetStore
from aqueduct_proxy.adapters.limiter import Limiter
from aqueduct_proxy.adapters.publisher import UsagePublisher
from aqueduct_proxy.adapters.resp import RespClient
from aqueduct_proxy.adapters.tokenizer import TokenCounter
from aqueduct_proxy.adapters.upstream import Cooldown, EgressProxies, UpstreamClient
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.application.gateway import Gateway, GatewayConfig
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.entrypoints.http import build_app
from aqueduct_proxy.entrypoints.server import OpenAIErrorsRunner
from aqueduct_proxy.features import Feature, features
from aqueduct_proxy.metrics import ProxyMetrics
from aqueduct_proxy.settings import ProxySettings

__all__ = ["Proxy", "bootstrap", "budgeting", "run", "serve"]

log = logging.getLogger(__name__)


@dataclass
class Proxy:
    """The wired proxy: its HTTP app and everything to start beside it and shut down after it."""

    app: web.Application
    gateway: Gateway
    nc: NATS
    watchers: list[KVWatcher] = field(default_factory=list)
    drain_seconds: float = 5.0
    replicas: int = 1  # AQUEDUCT_NATS_REPLICAS, for the stores the features open
    wired: dict[str, Any] = field(default_factory=dict)  # what each feature built, by its name
    broker: NatsBroker | None = None  # owns ``nc``: its handlers (usage acks, snapshot pushes)

    def ready(self) -> bool:
        return self.watchers[0].ready.is_set()

    def wire(self, listed: Sequence[Feature]) -> None:
        """Add the features to the app, in the order given; each finds what those before it built."""
        for feature in listed:
            self.wired[feature.name] = feature.wire(self)

    async def start(self) -> None:
        """Load and follow the snapshot (the features start with the application, ``on_startup``)."""
        for watcher in self.watchers:
            watcher.start()
        snapshot = self.gateway.snapshot
        # Changes the directory pushes as it writes them: a new token works even while the bucket cannot be
        # written (a NATS cluster electing its leader).
        assert self.broker is not None
        await follow_snapshot_pushes(self.broker, snapshot.on_snapshot_put, snapshot.on_snapshot_delete)
        _BACKGROUND.add(
            asyncio.create_task(_no_gc_while_loading(self.watchers[0].ready), name="snapshot-load-gc")
        )

    async def stop(self) -> None:
        """Stop watching, deliver or spool every usage event, then let go of the connections."""
        for watcher in self.watchers:
            await watcher.stop()
        await self.gateway.drain()
        if self.gateway.publisher is not None:
            await self.gateway.publisher.stop(self.drain_seconds)
        if self.gateway.limiter is not None:
            await self.gateway.limiter.close()
        await self.gateway.upstream.close()
        with contextlib.suppress(Exception):
            if self.broker is not None:
                await self.broker.stop()
            await self.nc.close()


async def _connect_bus(url: str) -> NatsBroker:
    while True:
        broker = new_broker(url, "aqueduct-proxy")
        try:
            await broker.start()  # its handlers are added once their targets exist (``subscribe``)
            return broker
        except Exception as exc:  # the bus may start after us; the proxy cannot serve without it
            log.warning("NATS at %s not reachable yet (%s); retrying", redact(url), exc)
            await asyncio.sleep(1.0)


async def bootstrap(settings: ProxySettings, *, with_features: Sequence[Feature] | None = None) -> Proxy:
    """The gateway on its adapters and its HTTP app with the optional features (all of them unless
    ``with_features`` names some: tests wire what they exercise)."""
    common = settings.common
    started = time.monotonic()
    broker = await _connect_bus(common.nats_url)
    nc = broker.connection
    js = nc.jetstream()
    log.info("connected to NATS in %.1fs", time.monotonic() - started)
    # Not awaited: checking a stream asks its leader, and on a NATS cluster that just lost a node none
    # answers for 4 to 9 s. Nothing below needs it first: the KV watches load from any replica and retry
    # until their bucket exists, usage waits in the journal until its stream answers.
    _BACKGROUND.add(asyncio.create_task(_check_topology(js, common.nats_replicas), name="topology-check"))
    metrics = ProxyMetrics()
    snapshot = Snapshot(await asyncio.to_thread(load_price_catalog))
    upstream = UpstreamClient(
        pool_size=settings.upstream_pool_size,
        timeout=settings.upstream_timeout_seconds,
        connect_timeout=settings.upstream_connect_timeout_seconds,
        egress=EgressProxies(os.environ),  # HTTP(S)_PROXY / NO_PROXY of an organisation's egress
        client=settings.upstream_client,
    )
    await upstream.start()
    limiter = budgets = None
    if settings.redis_url:
        valkey = RespClient(settings.redis_url, timeout=settings.redis_timeout_seconds)  # one connection
        limiter = Limiter(valkey)
        budgets = BudgetStore(valkey, hold_seconds=settings.budget_hold_seconds)
    publisher = UsagePublisher(
        broker,
        common.data_dir / "proxy-spool",
        max_buffered=settings.usage_buffer_max,
        events_per_message=settings.usage_events_per_message,
        **settings.journal_options(),
        on_published=metrics.usage_published.inc,
    )
    await publisher.start()
    gateway = Gateway(
        GatewayConfig(
            secret_key=common.secret_key_bytes,
            public_ui_url=common.public_ui_url,
            fail_open=settings.limits_on_store_failure == "open",
            retries=settings.retries,
            retry_backoff=settings.retry_backoff_seconds,
        ),
        snapshot,
        upstream,
        publisher,
        limiter,
        TokenCounter(settings.tokenizer_encoding),
        Cooldown(settings.cooldown_failures, settings.cooldown_window_seconds, settings.cooldown_seconds),
        metrics,
        upstream_timeout=settings.upstream_timeout_seconds,
        budgeting=budgeting(settings, snapshot, budgets, metrics),
    )
    watchers = [
        KVWatcher(js, names.AUTH_SNAPSHOT_BUCKET, snapshot.on_snapshot_put, snapshot.on_snapshot_delete),
        KVWatcher(js, names.QUOTA_BUCKET, snapshot.on_quota_put, snapshot.on_quota_delete),
    ]
    proxy = Proxy(
        app=web.Application(),
        gateway=gateway,
        nc=nc,
        broker=broker,
        watchers=watchers,
        drain_seconds=settings.shutdown_drain_seconds,
        replicas=common.nats_replicas,
    )
    proxy.app = build_app(
        gateway, proxy.ready, settings.max_body_bytes, front_end=settings.front_end == "lean"
    )
    proxy.wire(features(common) if with_features is None else with_features)
    return proxy


def budgeting(
    settings: ProxySettings, snapshot: Snapshot, store: BudgetStore | None, metrics: ProxyMetrics
) -> Budgeting:
    """Budgets at admission; they fail open or closed as the rate limits do."""
    return Budgeting(
        snapshot,
        store,
        metrics,
        fail_open=settings.limits_on_store_failure == "open",
        default_output_tokens=settings.budget_default_output_tokens,
        leases=settings.budget_leases,
    )


_BACKGROUND: set[asyncio.Task[None]] = set()  # start-up tasks, held until they end


async def _check_topology(js: JetStreamContext, replicas: int) -> None:
    started = time.monotonic()
    try:
        await ensure_topology(js, replicas)
    except Exception as exc:  # the directory owns the topology; the proxy only checks it
        log.error("could not check the NATS topology (%s); serving with what exists", exc)
    else:
        log.info("NATS topology checked in %.1fs", time.monotonic() - started)
    finally:
        _BACKGROUND.discard(asyncio.current_task())  # type: ignore[arg-type]


async def _no_gc_while_loading(ready: asyncio.Event, limit: float = 120.0) -> None:
    """The first load of the auth snapshot builds one object graph per token (100,000 tokens: 100,000
    grants), and the cyclic garbage collector, walking that growing graph again and again, would take
    more than half of the load's time. It is off until the snapshot is in (at most ``limit`` seconds);
    what the load built then moves to the permanent generation (``gc.freeze``), so later collections,
    on the request path, do not walk it either. Reference counting frees replaced grants as usual."""
    gc.disable()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), limit)
    finally:
        gc.enable()
        gc.freeze()
        _BACKGROUND.discard(asyncio.current_task())  # type: ignore[arg-type]


async def serve(settings: ProxySettings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then shut down without losing usage events."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proxy = await bootstrap(settings)
    await proxy.start()
    runner = OpenAIErrorsRunner(
        proxy.app,
        max_header_bytes=settings.max_header_bytes,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=30.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=settings.workers > 1, backlog=4096)
    await site.start()
    log.info("proxy listening on http://%s:%d/v1", settings.host, settings.port)
    await stop.wait()
    log.info("shutting down: finishing requests, delivering usage events")
    await runner.cleanup()  # stops accepting, waits for in-flight requests
    await proxy.stop()


def _serve_process(settings: ProxySettings) -> None:
    configure_logging("proxy", settings.common.log_level)
    import uvloop

    uvloop.run(serve(settings))


def run() -> None:
    settings = ProxySettings()  # fails fast on insecure settings, before forking workers
    configure_logging("proxy", settings.common.log_level)
    if settings.workers <= 1:
        _serve_process(settings)
        return
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_serve_process, args=(settings,)) for _ in range(settings.workers - 1)]
    for worker in workers:
        worker.start()
    try:
        _serve_process(settings)
    finally:
        for worker in workers:
            if worker.is_alive() and worker.pid:
                worker.terminate()  # SIGTERM: each worker drains its own usage events
        for worker in workers:
            worker.join(60)
