"""The composition root: settings -> event store, bus, relay, projection, sign-in RPC, HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from aqueduct_directory.adapters.persistence import event_store_env, open_position_store
from aqueduct_directory.adapters.projection import SnapshotProjector
from aqueduct_directory.adapters.relay import OutboxRelay
from aqueduct_directory.application import DirectoryApp
from aqueduct_directory.application.config_apply import apply_config, parse_config
from aqueduct_directory.domain.errors import InvalidInputError
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.entrypoints.http.app import create_http_app
from aqueduct_directory.entrypoints.rpc import DIRECTORY, sign_in_router
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs import bus, names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.ops import configure_logging
from aqueduct_libs.sessions import JWKS_KEY, SessionVerifier, watch_revoked_sessions
from aqueduct_libs.settings import CommonSettings
from aqueduct_libs.snapshot_push import SnapshotPusher

__all__ = ["DirectoryService", "bootstrap", "run", "run_replay"]

log = logging.getLogger("aqueduct_directory")

# How often a directory process looks for events that other processes saved to a shared store.
FOLLOW_INTERVAL = 1.0


def _open_directory(
    common: CommonSettings, settings: DirectorySettings, apply_config_file: bool = True
) -> DirectoryApp:
    directory = DirectoryApp(
        env=event_store_env(settings.database_url, common.data_dir),
        secret_key=common.secret_key_bytes,
        max_tokens_per_user=settings.max_tokens_per_user,
        max_service_accounts_per_team=settings.max_service_accounts_per_team,
        default_org=settings.default_org,
    )
    if apply_config_file and common.config_file is not None:
        changes = apply_config(directory, SYSTEM, parse_config(common.config_file.read_text()))
        for change in changes:
            log.info("config: %s", change)
    return directory


class DirectoryService:
    """The HTTP API and everything that runs beside it, started and stopped together."""

    app: FastAPI

    def __init__(self, settings: DirectorySettings, common: CommonSettings) -> None:
        self.common = common
        self.settings = settings
        self.directory = _open_directory(common, settings)
        self.verifier = SessionVerifier()
        self.broker = new_broker(common.nats_url, "aqueduct-directory", routers=(sign_in_router(),))
        self.broker.context.set_global(DIRECTORY, self.directory)
        self.nc: NATS | None = None
        self.relay: OutboxRelay | None = None
        self.projector: SnapshotProjector | None = None
        self._watcher: bus.KVWatcher | None = None
        self._revoked: bus.KVWatcher | None = None
        self._follower: asyncio.Task[None] | None = None
        self._positions = open_position_store(self.directory.store_env)
        self.app = create_http_app(self.directory, self.verifier, self.ready, self.replay)

    def ready(self) -> bool:
        return bool(
            self.nc
            and self.nc.is_connected
            and self.projector
            and self.projector.loaded.is_set()
            # Ended sessions known before answering: a signed-out token is refused from the first request.
            and self._revoked
            and self._revoked.ready.is_set()
        )

    async def start(self) -> None:
        self.nc = await self.broker.connect()
        js = self.nc.jetstream()
        # The directory owns the topology: it also brings existing streams to AQUEDUCT_NATS_REPLICAS.
        await bus.ensure_topology(js, self.common.nats_replicas, adjust=True)
        self.relay = OutboxRelay(self.directory, self.broker, self._positions)
        # Short timeouts: on a NATS cluster a write waits while the bucket elects a leader; retry soon.
        self.projector = SnapshotProjector(
            self.directory, self.nc.jetstream(timeout=2.0), push=SnapshotPusher(self.broker)
        )
        self.relay.start()
        self.projector.start()
        await self.broker.start()  # the sign-in RPC
        self._watcher = bus.KVWatcher(js, names.AUTH_KEYS_BUCKET, self._on_key, lambda key: None)
        self._watcher.start()
        self._revoked = watch_revoked_sessions(js, self.verifier)
        self._revoked.start()
        self._follower = asyncio.create_task(self._follow_store(), name="follow-event-store")

    async def _follow_store(self) -> None:
        """Pick up events other directory processes saved to a shared store (PostgreSQL scale-out)."""
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL)
            try:
                if (self.directory.recorder.max_notification_id() or 0) > self.directory.state.position:
                    self.directory.catch_up()
            except Exception as exc:  # the database is briefly away: the next round retries
                log.warning("could not read new events from the store: %s", exc)

    def _on_key(self, key: str, value: bytes) -> None:
        if key == JWKS_KEY:
            self.verifier.load_jwks(value)

    async def replay(self) -> dict[str, Any]:
        """Rebuild the read model from every stored event and make the KV snapshot equal to it."""
        assert self.projector is not None
        started = time.perf_counter()
        state = self.directory.rebuild_state()
        await self.projector.load()
        return {
            "events": state.position,
            "tokens": sum(1 for t in state.tokens.values() if not t.revoked),
            "snapshot_keys": len(self.projector.desired),
            "seconds": round(time.perf_counter() - started, 3),
        }

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._watcher:
            await self._watcher.stop()
        if self._revoked:
            await self._revoked.stop()
        # Last words before exit: what was saved reaches the bucket and the stream (bounded wait).
        if self.projector is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.projector.flush(), 5)
            await self.projector.stop()
        if self.relay is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.relay.publish_pending(), 5)
            await self.relay.stop()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.broker.stop()  # drains the connection
        self._positions.close()
        self.directory.close()


async def bootstrap(settings: DirectorySettings) -> DirectoryService:
    """The directory's event store (``aqueduct.yaml`` applied) and its HTTP app; ``start`` connects."""
    common = settings.common
    return DirectoryService(settings, common)


class _Server(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after its own shutdown, which would kill the process before
    the relay and the projection finish; here the signal only asks the server to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: DirectorySettings) -> None:
    service = await bootstrap(settings)
    await service.start()
    config = uvicorn.Config(service.app, host=settings.host, port=settings.port, log_level="warning")
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    try:
        # Stops accepting requests, finishes those in flight, then the relay publishes what is left.
        await server.serve()
    finally:
        await service.stop()


def run() -> None:
    settings = DirectorySettings()
    common = settings.common
    configure_logging("directory", common.log_level)
    try:
        asyncio.run(serve(settings))
    except InvalidInputError as exc:
        # A bad value in aqueduct.yaml: the file was checked whole, so nothing of it was applied.
        log.error("%s refused, nothing applied: %s", common.config_file, exc.detail)
        raise SystemExit(2) from None


async def _replay_once(common: CommonSettings, settings: DirectorySettings) -> dict[str, Any]:
    directory = _open_directory(common, settings, apply_config_file=False)  # a replay changes nothing
    nc = await bus.connect(common.nats_url, "aqueduct-directory-replay")
    try:
        js = nc.jetstream()
        await bus.ensure_topology(js, common.nats_replicas)
        projector = SnapshotProjector(directory, js)
        started = time.perf_counter()
        await projector.load()
        return {
            "events": directory.state.position,
            "snapshot_keys": len(projector.desired),
            "seconds": round(time.perf_counter() - started, 3),
        }
    finally:
        await nc.drain()
        directory.close()


def run_replay() -> None:
    settings = DirectorySettings()
    configure_logging("directory", settings.common.log_level)
    result = asyncio.run(_replay_once(settings.common, settings))
    print(" ".join(f"{k}={v}" for k, v in result.items()))
