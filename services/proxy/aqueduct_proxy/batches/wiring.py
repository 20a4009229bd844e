"""How the proxy's bootstrap adds the Batch API to its application (the worker is its own process)."""

from __future__ import annotations

from aiohttp import web
from nats.js import JetStreamContext

from aqueduct_proxy.application.gateway import Gateway
from aqueduct_proxy.batches.http import setup_batches
from aqueduct_proxy.batches.settings import BatchSettings
from aqueduct_proxy.batches.store import BatchStore
from aqueduct_proxy.entrypoints.startup import open_on_startup
from aqueduct_proxy.files.store import FileStore

__all__ = ["wire_batches"]


def wire_batches(
    app: web.Application,
    gateway: Gateway,
    js: JetStreamContext,
    files: FileStore,
    settings: BatchSettings,
    replicas: int = 1,
) -> BatchStore:
    store = BatchStore(
        js, replicas=settings.replicas or replicas, results_max_age_days=settings.results_max_age_days
    )

    open_on_startup(app, store.start, "the batches store")
    setup_batches(app, gateway.authenticate, files, store, settings)
    return store
