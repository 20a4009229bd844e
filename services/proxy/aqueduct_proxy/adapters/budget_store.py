"""Budget reservations in Valkey/Redis, exact across any number of proxy replicas.

Admission reserves a request's worst-case cost on every budget counter that applies (its user's, team's
and org's, per day and month), all or none, in one Lua script: refused when the settled spend, plus what
requests in flight hold, plus this request would cross a limit. When the request ends the hold is
replaced by the real cost (``settle``). A hold whose proxy died is released by the next admission after
its deadline: nothing stays reserved for ever. Key layout: ``aqueduct_libs.budgets``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from aqueduct_libs.budgets import DUE_KEY, HOLDS_KEY, Period
from aqueduct_proxy.adapters.limiter import STORE_ERRORS, ScriptRunner, as_runner
from aqueduct_proxy.adapters.resp import RespClient, RespError

__all__ = [
    "BudgetCounter",
    "BudgetHold",
    "BudgetRefusal",
    "BudgetStore",
    "BudgetStoreDown",
    "SentReservation",
]

log = logging.getLogger(__name__)

# Releasing a hold: its record "<nanos> <tokens> <key>..." is taken off each counter it names. Each
# ``redis.call`` costs Valkey more than the arithmetic around it: counters are read and written whole.
_RELEASE = """
-- Lua hands numbers to Valkey as "%.14g" (1e+15: a million dollars in nano-dollars): integers go as
-- text.
local function int(x) return string.format('%d', x) end
local function release(id)
  local record = redis.call('HGET', KEYS[1], id)
  if not record then return end
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  local parts = {}
  for part in string.gmatch(record, '%S+') do parts[#parts + 1] = part end
  local n, t = tonumber(parts[1]), tonumber(parts[2])
  for j = 3, #parts do
    local v = redis.call('HMGET', parts[j], 'hn', 'ht')
    if v[1] then
      redis.call('HSET', parts[j], 'hn', int((tonumber(v[1]) or 0) - n), 'ht', int((tonumber(v[2]) or 0) - t))
    end
  end
end
"""

# KEYS: holds, due, counters... ARGV: id, hold seconds, nanos, tokens, and the counters' own values in one
# string (fewer arguments to encode on the hot path): per counter "<nano limit> <token limit> <expire-at>"
# (limit -1: none). Returns {1, "<nanos> <tokens> ..." (per counter what it counts now, spent + held)}
# or {0, counter index, 1 (nanos) | 2 (tokens), spent, held}.
_RESERVE = (
    _RELEASE
    + """
local now = tonumber(redis.call('TIME')[1])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 16)
for _, id in ipairs(stale) do release(id) end
local n, t = tonumber(ARGV[3]), tonumber(ARGV[4])
local own = {}
for value in string.gmatch(ARGV[5], '%S+') do own[#own + 1] = tonumber(value) end
local state = {}
for i = 3, #KEYS do
  local base = 3 * (i - 3)
  local ln, lt = own[base + 1], own[base + 2]
  local v = redis.call('HMGET', KEYS[i], 'sn', 'st', 'hn', 'ht')
  local sn, st = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  local hn, ht = tonumber(v[3]) or 0, tonumber(v[4]) or 0
  if ln >= 0 and sn + hn + n > ln then return {0, i - 2, 1, sn, hn} end
  if lt >= 0 and st + ht + t > lt then return {0, i - 2, 2, st, ht} end
  state[i] = {hn, ht, v[1] == false, sn, st}
end
local record = ARGV[3] .. ' ' .. ARGV[4]
local counted = {}
for i = 3, #KEYS do
  local s = state[i]
  redis.call('HSET', KEYS[i], 'hn', int(s[1] + n), 'ht', int(s[2] + t))
  if s[3] then redis.call('EXPIREAT', KEYS[i], own[3 * (i - 3) + 3]) end
  record = record .. ' ' .. KEYS[i]
  counted[#counted + 1] = string.format('%d %d', s[4] + s[1] + n, s[5] + s[2] + t)
end
redis.call('HSET', KEYS[1], ARGV[1], record)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return {1, table.concat(counted, ' ')}
"""
)

# KEYS: holds, due, counters... ARGV: id, nanos, tokens, and the counters' own values as in _RESERVE.
# The hold (if it has not expired) is released and the real cost charged in one write per counter; a
# late settle still counts what was spent.
_SETTLE = (
    _RELEASE
    + """
local n, t = tonumber(ARGV[2]), tonumber(ARGV[3])
local own = {}
for value in string.gmatch(ARGV[4], '%S+') do own[#own + 1] = tonumber(value) end
local hn, ht = 0, 0
local record = redis.call('HGET', KEYS[1], ARGV[1])
if record then
  local parts = {}
  for part in string.gmatch(record, '%S+') do parts[#parts + 1] = part end
  if #parts == #KEYS then  -- the same counters (always, unless a caller changed them): one pass
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('ZREM', KEYS[2], ARGV[1])
    hn, ht = tonumber(parts[1]), tonumber(parts[2])
  else
    release(ARGV[1])
  end
end
for i = 3, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'sn', 'st', 'hn', 'ht')
  if v[3] or n ~= 0 or t ~= 0 then
    -- No held field: the counter was rebuilt (Valkey lost its data) and holds nothing of ours.
    local held_n = v[3] and (tonumber(v[3]) - hn) or 0
    local held_t = v[4] and (tonumber(v[4]) - ht) or 0
    redis.call('HSET', KEYS[i], 'sn', int((tonumber(v[1]) or 0) + n), 'st', int((tonumber(v[2]) or 0) + t),
      'hn', int(held_n), 'ht', int(held_t))
    if not v[3] then redis.call('EXPIREAT', KEYS[i], own[3 * (i - 3) + 3]) end
  end
end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    key: str
    limit_nanos: int | None
    limit_tokens: int | None
    scope: str  # what it counts, for the refusal: "team", "team-42", the day of 2026-12-04
    scope_id: str
    period: Period

    @property
    def expire_at(self) -> int:
        return self.period.expire_at


@dataclass(frozen=True, slots=True)
class BudgetHold:
    """What an admitted request holds until it settles. ``counted``: per counter, spent + held in nanos
    and tokens once this hold was added (what the proxy falls back on while Valkey is away). A hold
    with no ``id`` was admitted by that fallback and exists in this process only."""

    id: str
    counters: tuple[BudgetCounter, ...]
    nanos: int
    tokens: int
    counted: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    counter: BudgetCounter
    dimension: str  # "nanos" or "tokens"
    spent: int
    held: int


@dataclass(frozen=True, slots=True)
class SentReservation:
    """A reservation on its way to Valkey."""

    hold_id: str
    counters: tuple[BudgetCounter, ...]
    nanos: int
    tokens: int
    answer: asyncio.Future[Any]


class BudgetStoreDown(Exception):
    """Valkey/Redis is unreachable."""


class BudgetStore:
    def __init__(self, redis: Any, hold_seconds: int = 900, retry_down_after: float = 1.0) -> None:
        """``redis``: a ``RespClient`` (shared with the limiter) or a redis-py asyncio client."""
        self._redis: ScriptRunner = as_runner(redis)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._hold_seconds = hold_seconds
        self._retry_down_after = retry_down_after
        self._down_until = 0.0
        self._encodings: dict[tuple[BudgetCounter, ...], tuple[list[str], str]] = {}
        self._retries: set[asyncio.Task[bool]] = set()

    async def reserve(
        self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int
    ) -> BudgetHold | BudgetRefusal:
        if time.monotonic() < self._down_until:
            raise BudgetStoreDown("budget store unreachable (recent failure)")
        hold_id = os.urandom(8).hex()
        keys, own = self._encoded(counters)
        try:
            result = await self._redis.evalsha(
                self._reserve, keys, [hold_id, self._hold_seconds, nanos, tokens, own]
            )
        except STORE_ERRORS as exc:
            self._mark_down(exc)
            raise BudgetStoreDown(str(exc)) from exc
        return self._outcome(result, hold_id, counters, nanos, tokens)

    def reserve_nowait(
        self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int
    ) -> SentReservation | None:
        """Send the reservation without waiting (the fast client only; None: use ``reserve``), so that
        it travels with the rate-limit check; ``reserved`` reads the answer."""
        runner = self._redis
        if not isinstance(runner, RespClient) or self.down:
            return None
        hold_id = os.urandom(8).hex()
        keys, own = self._encoded(counters)
        sent = runner.evalsha_nowait(self._reserve, keys, [hold_id, self._hold_seconds, nanos, tokens, own])
        return None if sent is None else SentReservation(hold_id, counters, nanos, tokens, sent)

    async def reserved(self, sent: SentReservation) -> BudgetHold | BudgetRefusal:
        try:
            result = await sent.answer
        except STORE_ERRORS as exc:
            self._mark_down(exc)
            raise BudgetStoreDown(str(exc)) from exc
        if isinstance(result, RespError):
            if str(result).startswith("NOSCRIPT"):  # Valkey restarted: the long way loads the script
                return await self.reserve(sent.counters, sent.nanos, sent.tokens)
            self._mark_down(result)
            raise BudgetStoreDown(str(result))
        return self._outcome(result, sent.hold_id, sent.counters, sent.nanos, sent.tokens)

    @staticmethod
    def _outcome(
        result: Any, hold_id: str, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int
    ) -> BudgetHold | BudgetRefusal:
        if int(result[0]) == 1:
            counted = result[1].split() if isinstance(result[1], bytes | str) else ()
            return BudgetHold(hold_id, counters, nanos, tokens, tuple(map(int, counted)))
        return BudgetRefusal(
            counters[int(result[1]) - 1],
            "nanos" if int(result[2]) == 1 else "tokens",
            int(result[3]),
            int(result[4]),
        )

    def settle_nowait(self, hold: BudgetHold, nanos: int, tokens: int) -> bool:
        """``settle`` without waiting for Valkey's answer (the fast client only; False when it cannot
        send now: call ``settle``). The next reservation of this process runs after it in Valkey."""
        runner = self._redis
        if not isinstance(runner, RespClient) or self.down:
            return False
        keys, own = self._encoded(hold.counters)
        sent = runner.evalsha_nowait(self._settle, keys, [hold.id, nanos, tokens, own])
        if sent is None:
            return False
        sent.add_done_callback(partial(self._settled, hold, nanos, tokens))
        return True

    def _settled(self, hold: BudgetHold, nanos: int, tokens: int, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            return
        error = sent.exception() or sent.result()  # an error reply comes as a result
        if not isinstance(error, BaseException):
            return
        if isinstance(error, RespError) and str(error).startswith("NOSCRIPT"):
            # Valkey restarted without its scripts: settle the long way (which loads them).
            task = asyncio.get_running_loop().create_task(self.settle(hold, nanos, tokens))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
            return
        self._mark_down(error)
        log.warning("could not settle budget hold %s: %s", hold.id, error)

    async def settle(self, hold: BudgetHold, nanos: int, tokens: int) -> bool:
        """Replace the hold by the real cost; False when Valkey is unreachable (the hold then expires on
        its own, and accounting brings the spend back from ClickHouse)."""
        keys, own = self._encoded(hold.counters)
        args = [hold.id, nanos, tokens, own]
        try:
            await self._redis.evalsha(self._settle, keys, args)
        except STORE_ERRORS as exc:
            self._mark_down(exc)
            log.warning("could not settle budget hold %s: %s", hold.id, exc)
            return False
        return True

    def _encoded(self, counters: tuple[BudgetCounter, ...]) -> tuple[list[str], str]:
        """The keys of a set of counters and their own values as one argument, built once per set."""
        found = self._encodings.get(counters)
        if found is None:
            if len(self._encodings) > 10_000:
                self._encodings = {}
            own = " ".join(
                f"{-1 if c.limit_nanos is None else c.limit_nanos} "
                f"{-1 if c.limit_tokens is None else c.limit_tokens} {c.expire_at}"
                for c in counters
            )
            found = self._encodings[counters] = ([HOLDS_KEY, DUE_KEY, *(c.key for c in counters)], own)
        return found

    @property
    def down(self) -> bool:
        """A recent call failed: calls skip Valkey for a moment."""
        return time.monotonic() < self._down_until

    def _mark_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("budget store unreachable: %s", exc)
        self._down_until = time.monotonic() + self._retry_down_after
