"""How the proxy's bootstrap adds the files API and file content in chat to its application."""

from __future__ import annotations

from aiohttp import web
from nats.js import JetStreamContext

from aqueduct_proxy.application.gateway import Gateway
from aqueduct_proxy.entrypoints.startup import open_on_startup
from aqueduct_proxy.files.http import setup_files
from aqueduct_proxy.files.inline import setup_file_inlining
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore

__all__ = ["wire_files"]


def wire_files(
    app: web.Application,
    gateway: Gateway,
    js: JetStreamContext,
    settings: FilesSettings,
    replicas: int = 1,
) -> FileStore:
    """``/v1/files`` and the inlining of file parts; the store opens when the application starts.
    ``replicas`` (``AQUEDUCT_NATS_REPLICAS``) unless the files settings name their own."""
    store = FileStore(
        js, quota_bytes_per_user=settings.quota_bytes_per_user, replicas=settings.replicas or replicas
    )

    open_on_startup(app, store.start, "the files store")
    setup_files(app, gateway.authenticate, store, settings)
    setup_file_inlining(app, gateway.authenticate, gateway.snapshot, store, settings)
    return store
