"""Use case: tell the truth about ingest. Not ready while a consumer's stores keep failing (stuck) or while
it is far behind its stream; the lag and the age of the newest stored usage event are metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["IngestHealth", "WatchedConsumer"]

log = logging.getLogger(__name__)


class WatchedConsumer(Protocol):
    @property
    def durable(self) -> str: ...
    @property
    def failing_since(self) -> float | None: ...
    async def pending(self) -> int: ...


@dataclass
class IngestHealth:
    consumers: Sequence[WatchedConsumer]
    max_lag: int  # pending messages of one consumer above which the service is not ready
    stuck_after: float  # seconds of failing stores after which the service is not ready
    on_lag: Callable[[str, int], None] | None = None
    # How many dead letters wait in their stream, measured with the lag (for alerts).
    count_letters: Callable[[], Awaitable[int]] | None = None
    on_letters: Callable[[int], None] | None = None
    lags: dict[str, int] = field(default_factory=dict)
    # occurred_at of the newest usage event stored (aware UTC), for the age metric.
    newest_event: datetime | None = None

    def usage_stored(self, newest_occurred_at: str) -> None:
        """``newest_occurred_at``: the batch's latest ``occurred_at`` as ClickHouse text (UTC)."""
        moment = datetime.fromisoformat(newest_occurred_at).replace(tzinfo=UTC)
        if self.newest_event is None or moment > self.newest_event:
            self.newest_event = moment

    def newest_event_age(self) -> float:
        if self.newest_event is None:
            return 0.0
        return max((datetime.now(UTC) - self.newest_event).total_seconds(), 0.0)

    def problems(self) -> list[str]:
        found = []
        now = time.monotonic()
        for consumer in self.consumers:
            since = consumer.failing_since
            if since is not None and now - since > self.stuck_after:
                found.append(f"{consumer.durable}: every store has failed for {now - since:.0f}s")
            lag = self.lags.get(consumer.durable, 0)
            if lag > self.max_lag:
                found.append(f"{consumer.durable}: {lag} messages behind (more than {self.max_lag})")
        return found

    async def measure(self) -> None:
        for consumer in self.consumers:
            try:
                lag = await consumer.pending()
            except Exception as exc:  # the bus is away: keep the last figure, the bus check says so
                log.debug("lag of %s unknown: %s", consumer.durable, exc)
                continue
            self.lags[consumer.durable] = lag
            if self.on_lag is not None:
                self.on_lag(consumer.durable, lag)
        if self.count_letters is not None and self.on_letters is not None:
            try:
                self.on_letters(await self.count_letters())
            except Exception as exc:
                log.debug("dead letters not counted: %s", exc)

    async def run(self, interval: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.measure()
            await sleep(interval)
