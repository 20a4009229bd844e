"""``AQUEDUCT_PROXY_BATCH_*``: the batch API's and the batch worker's settings; ``AQUEDUCT_BATCH_WORKER_*``:
where the worker process serves its health and metrics (read once, at wiring)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aqueduct_libs.settings import CommonSettings
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.settings import ProxySettings

__all__ = ["BatchSettings", "BatchWorkerSettings"]


class BatchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_PROXY_BATCH_", extra="ignore")

    max_lines: int = 50_000  # OpenAI's limit per batch
    # Lines one worker process runs at a time (each still passes the owner's rate limits).
    concurrency: int = 32
    # A line not acknowledged within this time is handed to another worker (the worker heartbeats
    # long-running lines, so this bounds only how long a crashed worker's lines wait).
    ack_wait_seconds: float = 60.0
    finalize_interval_seconds: float = 0.5
    # Results of finished lines are kept this long (the output file holds them after finalization).
    results_max_age_days: int = 30
    # JetStream replicas of the batch buckets and work queue; unset: AQUEDUCT_NATS_REPLICAS.
    replicas: int | None = None


class BatchWorkerSettings(BaseSettings):
    """The batch worker process's settings: its operational HTTP server (``/healthz``, ``/readyz``,
    ``/metrics``), named like the other services' ``AQUEDUCT_<SERVICE>_HOST``/``_PORT`` (the launcher sets
    them for ``batch-worker``), and the proxy's settings it runs lines with, each read from its own
    environment prefix."""

    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_BATCH_WORKER_", extra="ignore")

    common: CommonSettings = Field(default_factory=CommonSettings)  # AQUEDUCT_*
    batch: BatchSettings = Field(default_factory=BatchSettings)  # AQUEDUCT_PROXY_BATCH_*
    proxy: ProxySettings = Field(default_factory=ProxySettings)  # AQUEDUCT_PROXY_*: routing, limits, upstream
    files: FilesSettings = Field(default_factory=FilesSettings)  # AQUEDUCT_PROXY_FILES_*

    host: str = "127.0.0.1"
    port: int = 8004
