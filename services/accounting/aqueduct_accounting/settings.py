"""Accounting settings: ``AQUEDUCT_ACCOUNTING_*``. Read once, in ``bootstrap``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aqueduct_libs.settings import CommonSettings

__all__ = ["AccountingSettings", "default_migrations_dir"]


def default_migrations_dir() -> Path:
    # services/accounting/aqueduct_accounting/settings.py -> repository root / infra / clickhouse
    return Path(__file__).resolve().parents[3] / "infra" / "clickhouse"


class AccountingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_ACCOUNTING_", extra="ignore")

    # AQUEDUCT_*: what every service shares (its own environment prefix; given whole by tests).
    common: CommonSettings = Field(default_factory=CommonSettings)

    host: str = "127.0.0.1"
    port: int = 8003
    # A clickhouse-connect DSN. Empty: chDB under <data_dir>/chdb (chdb:///folder for another folder);
    # a ClickHouse server: http://user:pass@host:8123/db (https:// with TLS).
    clickhouse_url: str = ""
    # With a server: the read-only `analyst` user ad-hoc SQL runs as (infra/clickhouse-server/users.xml).
    analyst_clickhouse_url: str = ""
    migrations_dir: Path | None = None
    # Usage ingest: one ClickHouse insert when this many messages or this many bytes are buffered (a
    # message holds one event, or up to 100 as the proxy groups them; an event is about 450 bytes), when
    # the stream is drained, or after flush_interval_seconds, whichever comes first.
    batch_size: int = 20_000
    batch_bytes: int = 8 * 1024 * 1024
    flush_interval_seconds: float = 1.0
    # Usage is stored at most once per store_interval_seconds (one insert: one part in usage_events,
    # whatever the rate), unless a batch fills first; the first events after a quiet spell are stored at
    # once. So a sparse event is stored within about a second of its arrival (issue 14). After a store of
    # at least busy_store_bytes of payload (about 140 events: a steady stream), the next one is due after
    # busy_store_interval_seconds instead: an insert's CPU is mostly fixed (8 to 12 ms here), shared by
    # three times as many events at 3 s as at 1 s. Budgets do not wait for it: what is read is handed
    # over every store_interval_seconds and counted in budget decisions at once (a budget crossed by a
    # steady stream is decided within 2 s), before it is stored; reports see it when it is stored.
    store_interval_seconds: float = 1.0
    busy_store_interval_seconds: float = 3.0
    busy_store_bytes: int = 64 * 1024
    # Roll-ups (usage_totals: the minute, hour and day sums reports and budgets read) are written this
    # often from the events stored since the last one, not by every insert: reports read the roll-ups
    # plus those few seconds of events, so nothing waits for them (application/rollups.py).
    rollup_interval_seconds: float = 30.0
    # usage_events' merge policy (the engine's merge_selector_base; 0: the engine's default, 5). See
    # application/self_repair.py: the default rewrites a small month's partition every fifth insert.
    merge_selector_base: float = Field(default=20.0, allow_inf_nan=False)
    # The duplicate check answers from memory for events that occurred in the last this many seconds
    # (their ids, at most recent_ids_max of them), and with a bounded query for older ones.
    recent_ids_seconds: float = 120.0
    recent_ids_max: int = 500_000
    consumer_name: str = "accounting-usage"
    directory_consumer_name: str = "accounting-directory"
    # A pull consumer's default (1,000) stalls batch fetches; acks come only after the insert.
    max_ack_pending: int = 50_000
    # Unacknowledged events (e.g. of a process that was killed) come back after this long.
    ack_wait_seconds: float = 30.0
    # How often budgets are re-checked even without new usage (periods end, budgets change, Valkey came
    # back without its data).
    budget_check_seconds: float = 1.0
    # The Valkey holding the proxies' budget counters (the proxy's AQUEDUCT_PROXY_REDIS_URL): reconciled
    # from ClickHouse at start, every budget_reconcile_seconds and after Valkey lost its data. Empty: not
    # reconciled (budgets then still end in quota decisions).
    redis_url: str = ""
    budget_reconcile_seconds: float = 30.0
    # Limits of an /api/sql answer: rows, bytes, seconds (enforced by the engine).
    sql_max_rows: int = 10_000
    # Tries of a failing batch before the messages at fault go to the dead-letter stream (only while the
    # engine itself answers; otherwise the batch is retried until it does).
    store_max_tries: int = 5
    # Not ready (/readyz 503) when a consumer has this many messages not yet stored, or when its stores
    # have kept failing for this long; the lag is measured every lag_check_seconds.
    ready_max_lag: int = 100_000
    ready_stuck_seconds: float = 30.0
    lag_check_seconds: float = 2.0
    sql_max_bytes: int = 64 * 1024 * 1024
    sql_max_seconds: int = 30

    @field_validator("merge_selector_base")
    @classmethod
    def _a_sane_merge_policy(cls, value: float) -> float:
        # Below 2 the engine would merge at every insert; far above, parts would pile up unmerged.
        if value != 0 and not 2 <= value <= 100:
            raise ValueError("must be 0 (the engine's default) or from 2 to 100")
        return value
