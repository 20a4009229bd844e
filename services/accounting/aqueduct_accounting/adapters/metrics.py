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
            "aqueduct_accounting_consumer_lag",
            "Usage messages in the stream not yet stored (not delivered, or delivered and not acknowledged)",
            registry=r,
        )
        self.directory_lag = Gauge(
            "aqueduct_accounting_directory_consumer_lag",
            "Directory events in the stream not yet mirrored",
            registry=r,
        )
        self.last_stored_age = Gauge(
            "aqueduct_accounting_last_stored_event_age_seconds",
            "How long ago the newest stored usage event happened",
            registry=r,
        )
        self.dead_letters = Counter(
            "aqueduct_accounting_dead_letters",
            "Messages or events sent to the dead-letter stream (they could not be stored)",
            registry=r,
        )
        self.dead_letters_waiting = Gauge(
            "aqueduct_accounting_dead_letters_waiting",
            "Dead letters in their stream, not re-driven yet",
            registry=r,
        )
        self.redriven = Counter(
            "aqueduct_accounting_redriven_dead_letters", "Dead letters re-driven and stored", registry=r
        )
        self.not_ready = Gauge(
            "aqueduct_accounting_not_ready",
            "1 while ingest is stuck (stores keep failing) or far behind, else 0",
            registry=r,
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
