"""Prometheus metrics of the directory's background work (served on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["RELAY_POSITION", "RELAY_PUBLISHED", "SNAPSHOT_POSITION", "SNAPSHOT_WRITES"]

RELAY_PUBLISHED = Counter(
    "aqueduct_directory_relay_published_total", "Integration events published to JetStream (acknowledged)"
)
RELAY_POSITION = Gauge("aqueduct_directory_relay_position", "Last notification id the outbox relay published")
SNAPSHOT_WRITES = Counter(
    "aqueduct_directory_snapshot_writes_total", "Keys written or deleted in the auth snapshot bucket", ["op"]
)
SNAPSHOT_POSITION = Gauge(
    "aqueduct_directory_snapshot_position", "Notification id the auth snapshot in KV reflects"
)
