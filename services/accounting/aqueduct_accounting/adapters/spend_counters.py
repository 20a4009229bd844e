"""The proxy's budget spend counters in Valkey, as accounting repairs them from ClickHouse.

Within a period spend only grows, and both ClickHouse (which may lag ingest by a second) and Valkey
(which may have lost its data) can only count too little, never too much. So reconciling raises each
counter to at least what ClickHouse stored: it never takes back spend the proxies settled since. The
marker key says the counters were reconciled; Valkey without it lost its data and is reconciled again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aqueduct_libs.budgets import MARKER_KEY

__all__ = ["CounterFloor", "SpendCounters", "SpendCountersDown"]

log = logging.getLogger(__name__)

# KEYS: counters. ARGV: per counter: nanos, tokens, expire-at.
_RAISE = """
for i = 1, #KEYS do
  local base = 1 + 3 * (i - 1)
  local n, t = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
  local v = redis.call('HMGET', KEYS[i], 'sn', 'st')
  -- ARGV as it came (text): a Lua number would reach Valkey as "%.14g"
  if (tonumber(v[1]) or 0) < n then redis.call('HSET', KEYS[i], 'sn', ARGV[base]) end
  if (tonumber(v[2]) or 0) < t then redis.call('HSET', KEYS[i], 'st', ARGV[base + 1]) end
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[base + 2])) end
end
return 1
"""

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class CounterFloor:
    key: str
    nanos: int
    tokens: int
    expire_at: int


class SpendCountersDown(Exception):
    """Valkey is unreachable."""


class SpendCounters:
    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._script = redis.register_script(_RAISE)

    @classmethod
    def from_url(cls, url: str, timeout: float = 2.0) -> SpendCounters:
        return cls(Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))

    async def lost(self) -> bool:
        """True when Valkey holds no reconciled counters (new, or restarted without its data)."""
        try:
            return not await self._redis.exists(MARKER_KEY)
        except (RedisError, OSError) as exc:
            raise SpendCountersDown(str(exc)) from exc

    async def raise_to(self, floors: list[CounterFloor], marker: str) -> None:
        try:
            for start in range(0, len(floors), _CHUNK):
                chunk = floors[start : start + _CHUNK]
                args: list[Any] = []
                for f in chunk:
                    args += (f.nanos, f.tokens, f.expire_at)
                await self._script(keys=[f.key for f in chunk], args=args)
            await self._redis.set(MARKER_KEY, marker)  # last: a reconciliation cut short runs again
        except (RedisError, OSError) as exc:
            raise SpendCountersDown(str(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()
