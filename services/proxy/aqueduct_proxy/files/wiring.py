"""The files API and file content in chat, as a feature of the proxy (``aqueduct_proxy.features``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from aqueduct_proxy.entrypoints.startup import open_on_startup
from aqueduct_proxy.files.http import setup_files
from aqueduct_proxy.files.inline import setup_file_inlining
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore

if TYPE_CHECKING:
    from aqueduct_proxy.bootstrap import Proxy

__all__ = ["FilesFeature"]


@dataclass(frozen=True)
class FilesFeature:
    settings: FilesSettings
    name: ClassVar[str] = "files"

    def wire(self, proxy: Proxy) -> FileStore:
        """``/v1/files`` and the inlining of file parts (a middleware); the store opens when the application
        starts. ``AQUEDUCT_NATS_REPLICAS`` unless the files settings name their own."""
        settings = self.settings
        store = FileStore(
            proxy.nc.jetstream(),
            quota_bytes_per_user=settings.quota_bytes_per_user,
            replicas=settings.replicas or proxy.replicas,
        )

        open_on_startup(proxy.app, store.start, "the files store")
        setup_files(proxy.app, proxy.gateway.authenticate, store, settings)
        setup_file_inlining(proxy.app, proxy.gateway.authenticate, proxy.gateway.snapshot, store, settings)
        return store
