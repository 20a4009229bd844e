"""Prometheus metrics of the accounting service, in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AccountingMetrics"]


@dataclass
class AccountingMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.ingested = Counter("aqueduct_accounting_ingested_events", "Usage events inserted", registry=r)
        self.duplicates = Counter(
            "aqueduct_accounting_duplicate_events", "Usage events dropped as already counted", registry=r
        )
        self.rejected = Counter(
            "aqueduct_accounting_rejected_messages", "Messages that are not valid usage events", registry=r
        )
        self.batch_size = Histogram(
            "aqueduct_accounting_batch_size",
            "Events per insert",
            buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 50000),
            registry=r,
        )
        self.insert_seconds = Histogram(
            "aqueduct_accounting_insert_seconds", "Duration of one batch insert", registry=r
        )
        self.insert_failures = Counter(
            "aqueduct_accounting_insert_failures", "Batch inserts that failed and were retried", registry=r
        )
        self.lag = Gauge(
            "aqueduct_accounting_consumer_lag", "Usage events in the stream not yet delivered", registry=r
        )
        self.directory_events = Counter(
            "aqueduct_accounting_directory_events", "Directory events mirrored", registry=r
        )
        self.quota_decisions = Gauge(
            "aqueduct_accounting_quota_decisions", "Quota decisions currently in force", registry=r
        )
        self.budget_reconciliations = Counter(
            "aqueduct_accounting_budget_reconciliations",
            "Budget spend reconciled from ClickHouse (into the proxies' Valkey counters when configured)",
            registry=r,
        )
