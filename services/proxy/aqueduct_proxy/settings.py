"""``AQUEDUCT_PROXY_*``: the data plane's own settings (read once, in ``bootstrap``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aqueduct_libs.settings import CommonSettings

__all__ = ["ProxySettings"]


class ProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AQUEDUCT_PROXY_", extra="ignore")

    # AQUEDUCT_*: what every service shares (its own environment prefix; given whole by tests).
    common: CommonSettings = Field(default_factory=CommonSettings)

    host: str = "127.0.0.1"
    port: int = 8000
    # Processes sharing the port (SO_REUSEPORT); each has its own pools, watches and publisher.
    workers: int = 1
    # Valkey/Redis holding the per-minute counters. Empty: limits are not enforced.
    redis_url: str = "redis://127.0.0.1:6379/0"
    # While Valkey is unreachable: "open" serves without limits (the default: an outage of the counter
    # store should not take the gateway down), "closed" answers 503.
    limits_on_store_failure: Literal["open", "closed"] = "open"
    redis_timeout_seconds: float = 0.25
    # Budgets (same Valkey, same open/closed rule): how long a request's reservation outlives a proxy
    # that died before settling it, and the output a request without max_tokens reserves when the price
    # map does not know the model's maximum.
    budget_hold_seconds: int = 900
    budget_default_output_tokens: int = 4096
    # Far from its limits, a budget's requests are admitted on a local allowance settled in Valkey every
    # 100 ms (a lease); near them, each request is checked in Valkey on its own. False: always on its own.
    budget_leases: bool = True
    max_body_bytes: int = 32 * 1024 * 1024
    # Longest header line (and request line) accepted; a longer one is answered 431 in OpenAI's format.
    max_header_bytes: int = 8190
    # Longest wait for the upstream's next bytes (its first byte, or the next chunk of a stream).
    upstream_timeout_seconds: float = 600.0
    upstream_connect_timeout_seconds: float = 10.0
    upstream_pool_size: int = 1000
    # "builtin": the lean HTTP/1.1 client for JSON calls (faster; bench/proxy.py --upstream-client);
    # "aiohttp": aiohttp's client for everything. Egress proxies (HTTPS_PROXY ...) always use aiohttp's.
    upstream_client: Literal["builtin", "aiohttp"] = "builtin"
    # "lean": the hot routes (plain JSON POSTs of chat, completions, embeddings) served by the lean front
    # end, everything else by aiohttp on the same connection (entrypoints/front.py); "aiohttp": aiohttp
    # serves every request.
    front_end: Literal["lean", "aiohttp"] = "lean"
    # Retries before the first byte reached the client, on connection errors, 429 and 5xx.
    retries: int = 2
    retry_backoff_seconds: float = 0.2
    # An endpoint failing this many times within the window is skipped for cooldown_seconds.
    cooldown_failures: int = 5
    cooldown_window_seconds: float = 30.0
    cooldown_seconds: float = 30.0
    # Usage events kept in memory while NATS is unreachable before spilling to <data_dir>/proxy-spool/.
    usage_buffer_max: int = 100_000
    # Usage events carried by one NATS message (a JSON array; accounting reads either form). More per
    # message: less work for the proxy and accounting per event; 1: one message per event.
    usage_events_per_message: int = 100
    # How long a graceful shutdown tries to deliver buffered usage events before spooling them.
    shutdown_drain_seconds: float = 5.0
    # The write-ahead journal of usage events (<data_dir>/proxy-spool/usage-<pid>-<uuid>.wal): a segment
    # rotates at this size or age and is deleted once all its events are acknowledged by JetStream.
    usage_journal_segment_bytes: int = 4 * 1024 * 1024
    usage_journal_segment_seconds: float = 5.0
    # fsync every appended event: also survives a machine crash, at the cost of one disk flush per request.
    usage_journal_fsync: bool = False
    tokenizer_encoding: str = "o200k_base"

    def journal_options(self) -> dict[str, Any]:
        """The journal settings as ``UsagePublisher`` keyword arguments."""
        return {
            "segment_bytes": self.usage_journal_segment_bytes,
            "segment_seconds": self.usage_journal_segment_seconds,
            "fsync": self.usage_journal_fsync,
        }
