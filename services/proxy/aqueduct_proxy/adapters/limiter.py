"""Per-minute limits in Valkey/Redis, exact across any number of proxy replicas.

Each counter is a hash of one-second buckets over a sliding 60-second window with a running total; one
Lua script checks and charges every counter of a request atomically (Valkey's clock, so replicas agree). Output tokens are
reserved up front when the request caps them (``max_tokens``) and settled from the upstream's usage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aqueduct_proxy.adapters.resp import RespClient, RespError

__all__ = [
    "STORE_ERRORS",
    "Admission",
    "Counter",
    "Limiter",
    "LimiterDown",
    "Rejection",
    "ScriptRunner",
    "as_runner",
]

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60

# Each counter hash holds one field per second ("<epoch second>" -> amount), the running total of the
# window ("t") and the oldest second that may still have a field ("o"). Sliding the window deletes only
# the seconds that fell out of it since the last call, so a check costs O(1) whatever the traffic.
_SLIDE = """
local function slide(key, now, window)
  local oldest = now - window + 1
  local state = redis.call('HMGET', key, 't', 'o', now)
  local total = tonumber(state[1]) or 0
  local o = tonumber(state[2]) or oldest
  local current = tonumber(state[3]) or 0
  if o < oldest then
    if oldest - o >= window then
      redis.call('DEL', key)
      total = 0
      current = 0
    else
      local gone = {}
      for sec = o, oldest - 1 do gone[#gone + 1] = sec end
      local values = redis.call('HMGET', key, unpack(gone))
      for j = 1, #gone do
        local n = tonumber(values[j])
        if n then total = total - n end
      end
      redis.call('HDEL', key, unpack(gone))
    end
    o = oldest
  end
  return total, o, current
end
"""

# KEYS: counters. ARGV[1]: window; then per counter: limit, cost.
# A cost of 0 (output tokens not reserved) only asks that something is left.
# Returns {1, now, used_1..n} when admitted, {0, index, used, retry_after} when refused.
# Two commands per admitted counter (HMGET, HSET; EXPIRE once a second): on the path of every request,
# and each ``redis.call`` costs Valkey more than the arithmetic around it.
_ADMIT = (
    _SLIDE
    + """
local now = tonumber(redis.call('TIME')[1])
local window = tonumber(ARGV[1])
local totals, oldest, current = {}, {}, {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  local total, o, c = slide(KEYS[i], now, window)
  totals[i], oldest[i], current[i] = total, o, c
  local need = cost
  if need < 1 then need = 1 end
  if total + need > limit then
    -- Keep the slid state of the counters looked at so far: their old seconds were deleted.
    for j = 1, i do redis.call('HSET', KEYS[j], 't', totals[j], 'o', oldest[j]) end
    -- When will enough of the window have slid away?
    local secs = {}
    for sec = o, now do secs[#secs + 1] = sec end
    local values = redis.call('HMGET', KEYS[i], unpack(secs))
    local wait = window
    local freed = 0
    for j = 1, #secs do
      freed = freed + (tonumber(values[j]) or 0)
      if total - freed + need <= limit then
        wait = secs[j] + window - now
        break
      end
    end
    redis.call('EXPIRE', KEYS[i], window + 5)
    return {0, i, total, wait}
  end
end
local result = {1, now}
for i = 1, #KEYS do
  local cost = tonumber(ARGV[2 * i + 1])
  if cost > 0 then
    redis.call('HSET', KEYS[i], 't', totals[i] + cost, 'o', oldest[i], now, current[i] + cost)
  else
    redis.call('HSET', KEYS[i], 't', totals[i], 'o', oldest[i])
  end
  -- The expiry is pushed back by the first charge of each second (its bucket was empty): a counter
  -- then outlives its last charge by at least the window, without an EXPIRE on every request.
  if current[i] == 0 then redis.call('EXPIRE', KEYS[i], window + 5) end
  result[#result + 1] = totals[i] + cost
end
return result
"""
)

# KEYS: counters. ARGV[1]: window, ARGV[2]: the admission second; then one delta per counter.
# A bucket that has left the window is not corrected; tokens produced later still count, from now.
# Nothing is taken off below what the bucket holds (a counter Valkey lost meanwhile stays at 0).
_SETTLE = (
    _SLIDE
    + """
local now = tonumber(redis.call('TIME')[1])
local window = tonumber(ARGV[1])
local second = tonumber(ARGV[2])
for i = 1, #KEYS do
  local delta = tonumber(ARGV[i + 2])
  local total, o = slide(KEYS[i], now, window)
  local at = second
  if at < o then at = now end
  if delta < 0 and at ~= second then delta = 0 end
  if delta < 0 then
    local held = tonumber(redis.call('HGET', KEYS[i], at)) or 0
    if held + delta < 0 then delta = -held end
  end
  if delta ~= 0 then
    redis.call('HINCRBY', KEYS[i], at, delta)
    total = total + delta
  end
  redis.call('HSET', KEYS[i], 't', total, 'o', o)
  redis.call('EXPIRE', KEYS[i], window + 5)
end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class Counter:
    key: str
    dimension: str  # "requests", "input_tokens" or "output_tokens"
    limit: int
    cost: int
    model: str | None = None  # a limit of one model's (the grant's ``model_limits``), for the refusal


@dataclass(slots=True)
class Admission:
    """An admitted request: the counters it charged and what remains of each, for headers and settling."""

    counters: list[Counter] = field(default_factory=list)
    used: list[int] = field(default_factory=list)
    second: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    counter: Counter
    used: int
    retry_after: int


class LimiterDown(Exception):
    """Valkey/Redis is unreachable."""


class ScriptRunner(Protocol):
    def register_script(self, source: str) -> Any: ...

    async def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any: ...

    async def close(self) -> None: ...


class _RedisPyRunner:
    """redis-py's asyncio client (cluster, sentinel) behind the same two calls as ``RespClient``; its
    errors come out as ``RespError``, so the callers know one kind (``STORE_ERRORS``). redis-py is
    imported here, by whoever passes its client: the proxy's own client does not need it (it costs
    close to a second of the proxy's start on a busy machine)."""

    def __init__(self, redis: Any) -> None:
        from redis.exceptions import NoScriptError, RedisError

        self._redis = redis
        self._scripts: dict[str, str] = {}
        self._no_script = NoScriptError
        self._redis_error = RedisError

    def register_script(self, source: str) -> str:
        script = self._redis.register_script(source)
        self._scripts[script.sha] = source
        return str(script.sha)

    async def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        try:
            try:
                return await self._redis.evalsha(sha, len(keys), *keys, *args)
            except self._no_script:
                await self._redis.script_load(self._scripts[sha])
                return await self._redis.evalsha(sha, len(keys), *keys, *args)
        except self._redis_error as exc:
            raise RespError(str(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()


STORE_ERRORS = (RespError, OSError, TimeoutError)
_STORE_ERRORS = STORE_ERRORS


def as_runner(redis: Any) -> ScriptRunner:
    """A ``RespClient`` as it is, a redis-py asyncio client behind the same calls."""
    return redis if isinstance(redis, RespClient) else _RedisPyRunner(redis)


class Limiter:
    def __init__(self, redis: Any, retry_down_after: float = 1.0, window: int = WINDOW_SECONDS) -> None:
        """``redis``: a ``RespClient`` (fast, one server) or a redis-py asyncio client."""
        self._redis: ScriptRunner = as_runner(redis)
        self._window = window
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        # After a failure, do not wait for a timeout on every request: skip Valkey for a moment.
        self._retry_down_after = retry_down_after
        self._down_until = 0.0

    @classmethod
    def from_url(cls, url: str, timeout: float = 0.25, window: int = WINDOW_SECONDS) -> Limiter:
        return cls(RespClient(url, timeout=timeout), window=window)

    @property
    def resting(self) -> bool:
        """Valkey failed a moment ago: checks are not sent until ``retry_down_after`` has passed."""
        return time.monotonic() < self._down_until

    async def admit(self, counters: list[Counter]) -> Admission | Rejection:
        if not counters:
            return Admission()
        if time.monotonic() < self._down_until:
            raise LimiterDown("rate-limit store unreachable (recent failure)")
        args: list[int] = [self._window]
        for c in counters:
            args += (c.limit, c.cost)
        try:
            result = await self._redis.evalsha(self._admit, [c.key for c in counters], args)
        except _STORE_ERRORS as exc:
            self._mark_down(exc)
            raise LimiterDown(str(exc)) from exc
        if int(result[0]) == 1:
            return Admission(counters, [int(v) for v in result[2:]], int(result[1]))
        counter = counters[int(result[1]) - 1]
        return Rejection(counter, int(result[2]), max(1, int(result[3])))

    async def settle(self, admission: Admission, output_tokens: int) -> None:
        """Charge the output tokens the upstream reported, net of what was reserved."""
        keys, deltas = [], []
        for c in admission.counters:
            if c.dimension == "output_tokens" and output_tokens != c.cost:
                keys.append(c.key)
                deltas.append(output_tokens - c.cost)
        if not keys or time.monotonic() < self._down_until:
            return
        try:
            await self._redis.evalsha(self._settle, keys, [self._window, admission.second, *deltas])
        except _STORE_ERRORS as exc:
            self._mark_down(exc)

    async def give_back(self, counters: list[Counter], second: int, amounts: list[int]) -> None:
        """Take ``amounts`` off what ``counters`` were charged at ``second`` (an unused credit). Lost
        when Valkey does not answer: the counters then count more than was used until it slides out
        of the window, never less."""
        keys = [c.key for c in counters]
        if not keys or time.monotonic() < self._down_until:
            return
        try:
            await self._redis.evalsha(self._settle, keys, [self._window, second, *(-a for a in amounts)])
        except _STORE_ERRORS as exc:
            self._mark_down(exc)

    def _mark_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("rate-limit store unreachable: %s", exc)
        self._down_until = time.monotonic() + self._retry_down_after

    async def close(self) -> None:
        await self._redis.close()
