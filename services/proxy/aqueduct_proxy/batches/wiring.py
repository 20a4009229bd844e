"""The Batch API as a feature of the proxy (``aqueduct_proxy.features``); the worker is its own process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from aqueduct_proxy.batches.http import setup_batches
from aqueduct_proxy.batches.settings import BatchSettings
from aqueduct_proxy.batches.store import BatchStore, batch_lines_publisher
from aqueduct_proxy.entrypoints.startup import open_on_startup
from aqueduct_proxy.files.store import FileStore

if TYPE_CHECKING:
    from aqueduct_proxy.bootstrap import Proxy

__all__ = ["BatchesFeature"]


@dataclass(frozen=True)
class BatchesFeature:
    settings: BatchSettings
    name: ClassVar[str] = "batches"

    def wire(self, proxy: Proxy) -> BatchStore:
        """``/v1/batches``; its input and output are files, so the files feature comes first."""
        files = proxy.wired.get("files")
        if not isinstance(files, FileStore):
            raise RuntimeError("the batches feature needs the files feature wired before it")
        settings = self.settings
        assert proxy.broker is not None
        store = BatchStore(
            proxy.nc.jetstream(),
            lines=batch_lines_publisher(proxy.broker),
            replicas=settings.replicas or proxy.replicas,
            results_max_age_days=settings.results_max_age_days,
        )

        open_on_startup(proxy.app, store.start, "the batches store")
        setup_batches(proxy.app, proxy.gateway.authenticate, files, store, settings)
        return store
