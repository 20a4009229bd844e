"""The Batch API (``/v1/batches``) and the worker that runs batch lines from a JetStream work queue."""

from aqueduct_proxy.batches.http import setup_batches
from aqueduct_proxy.batches.settings import BatchSettings
from aqueduct_proxy.batches.store import BatchStore

__all__ = ["BatchSettings", "BatchStore", "setup_batches"]
