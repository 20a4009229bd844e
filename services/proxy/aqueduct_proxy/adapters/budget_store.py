"""Budget reservations in Valkey/Redis, exact across any number of proxy replicas.

Admission reserves a request's worst-case cost on every budget counter that applies (its user's, team's
and org's, per day and month), all or none, in one Lua script: refused when the settled spend, plus what
requests in flight hold, plus this request would cross a limit. When the request ends the hold is
replaced by the real cost (settled). A hold whose proxy died is released by a later admission after
its deadline: nothing stays reserved for ever. Key layout: ``aqueduct_libs.budgets``.

What one process asks during a turn of its event loop (settlements and reservations, in order) goes to
Valkey as one script call: each counter is read and written once per call, not once per request, which
is what makes budgets nearly free on the hot path (Valkey's CPU per request was three times the
limits' when every request ran two scripts of its own). The call is still atomic: exact as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from aqueduct_libs.budgets import DUE_KEY, HOLDS_KEY, Period
from aqueduct_proxy.adapters.limiter import ScriptRunner, as_runner
from aqueduct_proxy.adapters.resp import Encoded, RespClient, RespError, bulk

if TYPE_CHECKING:
    from aqueduct_proxy.adapters.budget_leases import BudgetLease

__all__ = [
    "BudgetCounter",
    "BudgetHold",
    "BudgetRefusal",
    "BudgetStore",
    "BudgetStoreDown",
    "SentReservation",
]

log = logging.getLogger(__name__)

_PREFIX = HOLDS_KEY[: -len("holds")]  # what every budget key starts with

# KEYS: holds (records of an earlier version), due, then every counter the call touches. ARGV[1]: hold
# seconds (by Valkey's clock, as every replica sees it); ARGV[2]: "1" to release the holds of proxies that
# died; then per counter its limits and expiry, "<nanos>", "<tokens>", "<expire-at>" (limit -1: none);
# then the sets of counters requests count against: how many, then per set its size and its counters'
# positions; then per set its seven sums in one argument, "<reservations (-1: one of them is negative)>
# <their nanos> <tokens> <its settlements' nanos> <tokens> <what the holds they settle held, nanos>
# <tokens>"; then
# the operations in order: "r", the hold's member of the due set, set to reserve the worst case the
# member names; "s", the member, set, nanos, tokens to settle that hold to that real cost. A member is
# "<id> <nanos> <tokens> <counter key without the common prefix>...": what a later admission needs to
# release it once it expires (its proxy died); a settlement finds the nanos and tokens it held there. Returns per reservation 1, or {<counter's position in its set>, <1 nanos | 2 tokens>, <spent>,
# <held>} when refused; then what each counter counts once the call is done, spent + held: {<nanos>,
# <tokens>, ...}. A settled hold that has expired meanwhile (and was released) still charges its real
# cost. The call's settlements go first (sent without waiting, any order among its operations is one they
# could have had), then its reservations in order. Each ``redis.call``, each conversion and each string
# the script builds cost Valkey more than the arithmetic: counters are read once, kept in Lua tables,
# written once at the end; numbers go to Valkey and back as numbers (exact integers below 2^53: Valkey
# formats a Lua number that is an integer as one); and the usual call (every hold settled still there,
# room for every reservation) applies each set's sums once rather than each operation on each of its
# counters: the operations one by one only when a hold had expired or a reservation may be refused.
_BATCH = """
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'holds')
-- The holds of a proxy that died: released before anything reads the counters (looked for at most once
-- a second per process). One recorded by an earlier version is its id alone, its record in the holds
-- hash.
local now = tonumber(redis.call('TIME')[1])
if ARGV[2] == '1' then
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 16)) do
    redis.call('ZREM', KEYS[2], member)
    local record = string.match(member, '^%S+ (.*)$')
    if not record then
      record = redis.call('HGET', KEYS[1], member)
      redis.call('HDEL', KEYS[1], member)
    end
    if record then
      local n, t, keys = string.match(record, '^(%S+) (%S+)(.*)$')
      for key in string.gmatch(keys, '%S+') do
        if string.sub(key, 1, 3) ~= 'aq:' then key = prefix .. key end
        local v = redis.call('HMGET', key, 'hn', 'ht')
        if v[1] then
          redis.call('HSET', key, 'hn', (tonumber(v[1]) or 0) - n, 'ht', (tonumber(v[2]) or 0) - t)
        end
      end
    end
  end
end
local count = #KEYS - 2
local tonumber, call = tonumber, redis.call
-- Tables built with room for eight counters (a call's usual six): growing one costs Valkey more
-- than filling it.
local sn, st, hn, ht = {0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}
local ln, lt = {0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 0}
local held, fresh = {false, false, false, false, false, false, false, false}, {false, false, false, false, false, false, false, false}
for i = 1, count do
  local v = call('HMGET', KEYS[i + 2], 'sn', 'st', 'hn', 'ht')
  sn[i], st[i] = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  hn[i], ht[i] = tonumber(v[3]) or 0, tonumber(v[4]) or 0
  -- No held field: the counter was rebuilt (Valkey lost its data) and holds nothing of ours.
  held[i] = v[3] ~= false
  fresh[i] = v[1] == false or v[3] == false
  ln[i], lt[i] = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1])
end
local a = 3 + 3 * count
local nsets = tonumber(ARGV[a])
local sets = {}
for s = 1, nsets do
  local size, members = tonumber(ARGV[a + 1]), {}
  for j = 1, size do members[j] = tonumber(ARGV[a + 1 + j]) end
  sets[s] = members
  a = a + 1 + size
end
-- Per set, seven sums in one argument: its reservations (-1: one of them is negative), their nanos and
-- tokens; its settlements' nanos and tokens, and what the holds settled held.
local sums = {}
for s = 1, nsets do
  local r, n, t, sn_, st_, hn_, ht_ = string.match(ARGV[a + s], '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
  sums[s] = {tonumber(r), tonumber(n), tonumber(t), tonumber(sn_), tonumber(st_), tonumber(hn_), tonumber(ht_)}
end
a = a + nsets + 1
local last = #ARGV
local due = now + tonumber(ARGV[1])
-- What the reservations add to the due set if all are admitted, and the holds settled.
local settled, new_due = {nil, nil, nil, nil, nil, nil, nil, nil}, {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
local nsettled, nnew = 0, 0
local o = a
while o <= last do
  if ARGV[o] == 's' then
    nsettled = nsettled + 1
    settled[nsettled] = ARGV[o + 1]
    o = o + 5
  else
    new_due[nnew + 1], new_due[nnew + 2] = due, ARGV[o + 1]
    nnew = nnew + 2
    o = o + 3
  end
end
-- Settlements first (they were sent before this call, without waiting: any order among the call's
-- operations is one they could have had). Each set's settlements at once, from the sums, when every
-- hold settled is still there; one by one when one had expired (and was released) meanwhile: it
-- still charges its real cost, but holds nothing any more.
if nsettled > 0 then
  local scores = call('ZMSCORE', KEYS[2], unpack(settled, 1, nsettled))
  call('ZREM', KEYS[2], unpack(settled, 1, nsettled))
  local all = true
  for j = 1, nsettled do
    if scores[j] == false then all = false end
  end
  if all then
    for s = 1, nsets do
      local sum = sums[s]
      local n, t, rn, rt = sum[4], sum[5], sum[6], sum[7]
      if n ~= 0 or t ~= 0 or rn ~= 0 or rt ~= 0 then
        local set = sets[s]
        for j = 1, #set do
          local i = set[j]
          sn[i], st[i] = sn[i] + n, st[i] + t
          if held[i] then hn[i], ht[i] = hn[i] - rn, ht[i] - rt end
        end
      end
    end
  else
    local k, o = 0, a
    while o <= last do
      if ARGV[o] ~= 's' then
        o = o + 3
      else
        k = k + 1
        local set, n, t = sets[tonumber(ARGV[o + 2])], tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4])
        local rn, rt = 0, 0
        if scores[k] ~= false then
          local x, y = string.match(ARGV[o + 1], '^%S+ (%S+) (%S+)')
          rn, rt = tonumber(x), tonumber(y)
        end
        for j = 1, #set do
          local i = set[j]
          sn[i], st[i] = sn[i] + n, st[i] + t
          if held[i] then hn[i], ht[i] = hn[i] - rn, ht[i] - rt end
        end
        o = o + 5
      end
    end
  end
end
local answers = {nil, nil, nil, nil, nil, nil, nil, nil}
if nnew > 0 then
  -- All of them at once when every counter they count against has room for all (the common case): then
  -- each has room after those before it, as none is negative. One by one otherwise.
  local need_n, need_t = {nil, nil, nil, nil, nil, nil, nil, nil}, {nil, nil, nil, nil, nil, nil, nil, nil}
  local room = true
  for s = 1, nsets do
    local sum = sums[s]
    local r = sum[1]
    if r < 0 then room = false end
    if r > 0 then
      local n, t = sum[2], sum[3]
      local set = sets[s]
      for j = 1, #set do
        local i = set[j]
        need_n[i], need_t[i] = (need_n[i] or 0) + n, (need_t[i] or 0) + t
      end
    end
  end
  if room then
    for i = 1, count do
      local n = need_n[i]
      if n then
        local t = need_t[i]
        if (ln[i] >= 0 and sn[i] + hn[i] + n > ln[i]) or (lt[i] >= 0 and st[i] + ht[i] + t > lt[i]) then
          room = false
          break
        end
      end
    end
  end
  if room then
    for i = 1, count do
      local n = need_n[i]
      if n then hn[i], ht[i], held[i] = hn[i] + n, ht[i] + need_t[i], true end
    end
    for j = 1, nnew / 2 do answers[j] = 1 end
  else
    new_due, nnew = {}, 0
    local o = a
    while o <= last do
      if ARGV[o] == 's' then
        o = o + 5
      else
        local x, y = string.match(ARGV[o + 1], '^%S+ (%S+) (%S+)')
        local n, t, set = tonumber(x), tonumber(y), sets[tonumber(ARGV[o + 2])]
        local size = #set
        local refused
        for j = 1, size do
          local i = set[j]
          local limit = ln[i]
          if limit >= 0 and sn[i] + hn[i] + n > limit then
            refused = {j, 1, sn[i], hn[i]}
            break
          end
          limit = lt[i]
          if limit >= 0 and st[i] + ht[i] + t > limit then
            refused = {j, 2, st[i], ht[i]}
            break
          end
        end
        if refused then
          answers[#answers + 1] = refused
        else
          for j = 1, size do
            local i = set[j]
            hn[i], ht[i], held[i] = hn[i] + n, ht[i] + t, true
          end
          answers[#answers + 1] = 1
          new_due[nnew + 1], new_due[nnew + 2] = due, ARGV[o + 1]
          nnew = nnew + 2
        end
        o = o + 3
      end
    end
  end
end
local counted = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
for i = 1, count do
  call('HSET', KEYS[i + 2], 'sn', sn[i], 'st', st[i], 'hn', hn[i], 'ht', ht[i])
  if fresh[i] then call('EXPIREAT', KEYS[i + 2], ARGV[3 * i + 2]) end
  counted[4 * i - 3], counted[4 * i - 2], counted[4 * i - 1], counted[4 * i] = sn[i] + hn[i], st[i] + ht[i], sn[i], st[i]
end
if nnew > 0 then call('ZADD', KEYS[2], unpack(new_due, 1, nnew)) end
answers[#answers + 1] = counted
return answers
"""


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    key: str
    limit_nanos: int | None
    limit_tokens: int | None
    scope: str  # what it counts, for the refusal: "team", "team-42", the day of 2026-12-04
    scope_id: str
    period: Period
    scope_name: str = ""  # the org's, team's or user's name, for the refusal ("": its id alone)

    @property
    def expire_at(self) -> int:
        return self.period.expire_at

    @property
    def own(self) -> tuple[int, int, int]:
        """Its limits and expiry as the budget script reads them: nanos, tokens (-1: none), expire-at."""
        nanos = -1 if self.limit_nanos is None else self.limit_nanos
        tokens = -1 if self.limit_tokens is None else self.limit_tokens
        return nanos, tokens, self.expire_at


@dataclass(slots=True)  # built on every request: not frozen, which costs twice as much
class BudgetHold:
    """What an admitted request holds until it settles. ``counted``: per counter, spent + held in nanos
    and tokens once the call that added this hold was done. A hold with no ``id`` was admitted while
    Valkey was away and exists in this process only."""

    id: str
    counters: tuple[BudgetCounter, ...]
    nanos: int
    tokens: int
    member: bytes = b""  # its member of the due set, as RESP sends it (built from the rest when empty)
    # What the call counted: its counter keys and, per key, nanos and tokens counted (spent + held),
    # then spent alone (as Valkey answered).
    counts: tuple[list[str], list[int]] | None = None
    # The lease that admitted it (``budget_leases``): it settles there, not in Valkey.
    lease: BudgetLease | None = None

    @property
    def counted(self) -> tuple[int, ...]:
        if self.counts is None:
            return ()
        keys, values = self.counts
        at = {key: 4 * i for i, key in enumerate(keys)}
        return tuple([values[at[c.key] + d] for c in self.counters for d in (0, 1)])


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    counter: BudgetCounter
    dimension: str  # "nanos" or "tokens"
    spent: int
    held: int


@dataclass(slots=True)  # not frozen: built on every request, and a frozen one costs twice as much
class SentReservation(BudgetHold):
    """An operation queued for this turn's call to Valkey: a reservation (``reserved`` reads its
    answer; once admitted, it is the request's hold: no other object is made) or a settlement.
    ``member``: the hold's member of the due set, "<id> <nanos> <tokens> <counter keys>" as reserved,
    encoded as RESP sends it (``bulk``): once per request, for its reservation and its settlement."""

    kind: str = "r"  # "r" reserve, "s" settle
    held_nanos: int = 0  # a settlement's: what its hold held
    held_tokens: int = 0
    # What the call answered: the reservation's answer (1, or a refusal's list), True for a settlement,
    # or BudgetStoreDown. Kept here, not in a future: the answer is usually read before anyone waits for
    # it (it arrives with the rate-limit check's), so a future is made only for whoever waits sooner.
    # ``counts`` (a reservation's): what its call counted.
    outcome: Any = None
    waiter: asyncio.Future[Any] | None = None

    def answered(self, outcome: Any) -> None:
        self.outcome = outcome
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    async def wait(self) -> Any:
        """The outcome, once the call is answered."""
        if self.outcome is None:
            if self.waiter is None:
                self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.outcome


_RESERVE, _SETTLE = bulk("r"), bulk("s")


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a call's arguments say before its operations (see ``_BATCH``)."""

    sets_of: tuple[tuple[BudgetCounter, ...], ...]  # the sets of counters, in order (kept: ids are keys)
    keys: list[str]
    plain: list[Any]  # the counters' limits and the sets, as arguments
    encoded: Encoded  # the same, encoded
    positions: dict[int, int]  # id of a set -> its number
    sets: dict[int, bytes]  # id of a set -> its number, encoded


class BudgetStoreDown(Exception):
    """Valkey/Redis is unreachable."""


class BudgetStore:
    def __init__(
        self,
        redis: Any,
        hold_seconds: int = 900,
        retry_down_after: float = 1.0,
        settle_within: float = 0.005,
    ) -> None:
        """``redis``: a ``RespClient`` (shared with the limiter) or a redis-py asyncio client.
        ``settle_within``: how long a settlement sent without waiting may wait for other commands to
        travel with (the next reservation, usually): a call to Valkey costs it more than the
        operations in it."""
        self._redis: ScriptRunner = as_runner(redis)
        self._batch = self._redis.register_script(_BATCH)
        self._hold_seconds = hold_seconds
        self._retry_down_after = retry_down_after
        self._down_until = 0.0
        self._queue: list[SentReservation] = []
        self._settle_within = settle_within
        self._flushing = False
        self._timer: asyncio.TimerHandle | None = None
        # Hold ids: unique per process start, then counted (no system call per request).
        self.hold_prefix = os.urandom(6).hex()
        self._holds = 0
        self._next_scan = 0.0  # when to look for the holds of proxies that died, next
        # A set of counters (a tuple the caller keeps) -> its keys without the common prefix, as a hold's
        # member of the due set names them: built once, not per request.
        self._names: dict[int, tuple[tuple[BudgetCounter, ...], str]] = {}
        self._layouts: dict[tuple[int, ...], _Layout] = {}
        self._last: _Layout | None = None
        # Counter key -> [nanos, tokens] it counted (spent + held by every replica) once the last call
        # that touched it was done: how far a counter is from its limit (leases).
        self.counted: dict[str, list[int]] = {}
        # The fallback while Valkey is away (``Budgeting``): per counter key, [nanos, tokens] spent as
        # Valkey last said, plus what this process settled or admitted on its own since; and what this
        # process holds there (admitted, not settled yet). Holds of other replicas are not counted: they
        # become spend that this process cannot see, and accounting's decisions from ClickHouse can. So
        # each replica may spend what was left, not less (counting them, replicas with many requests in
        # flight when Valkey went away all refused a budget that was nowhere near used up).
        self.spent: dict[str, list[int]] = {}
        self.own_held: dict[str, list[int]] = {}
        self._calls: set[asyncio.Future[Any]] = set()
        self._handed = 0  # calls handed to the fast client whose reply has not been read yet
        self._idle: asyncio.Future[None] | None = None  # ``drain`` waits for the last reply (made then)
        if isinstance(self._redis, RespClient):
            # The call leaves in the same write as the turn's other commands (the rate-limit checks).
            self._redis.before_flush(self._flush)

    def reserve_nowait(
        self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int
    ) -> SentReservation | None:
        """Queue the reservation for this turn's call (None: Valkey failed a moment ago), so that it
        travels with the rate-limit check; ``reserved`` reads the answer."""
        if self._down_until and self.down:
            return None
        self._holds += 1
        hold_id = f"{self.hold_prefix}{self._holds:x}"
        sent = SentReservation(
            hold_id, counters, nanos, tokens, self._encoded(hold_id, nanos, tokens, counters)
        )
        self._enqueue(sent)
        return sent

    def _names_of(self, counters: tuple[BudgetCounter, ...]) -> str:
        known = self._names.get(id(counters))
        if known is None or known[0] is not counters:
            if len(self._names) > 10_000:
                self._names = {}
            names = " ".join(
                [c.key[len(_PREFIX) :] if c.key.startswith(_PREFIX) else c.key for c in counters]
            )
            known = self._names[id(counters)] = (counters, names)
        return known[1]

    def _encoded(self, hold_id: str, nanos: int, tokens: int, counters: tuple[BudgetCounter, ...]) -> bytes:
        member = f"{hold_id} {nanos} {tokens} {self._names_of(counters)}"
        if member.isascii():  # its length in characters is its length in bytes: formatted once, as str
            return f"${len(member)}\r\n{member}\r\n".encode()
        data = member.encode()
        return b"$%d\r\n%b\r\n" % (len(data), data)

    def _member(self, hold: BudgetHold) -> bytes:
        return hold.member or self._encoded(hold.id, hold.nanos, hold.tokens, hold.counters)

    async def reserve(
        self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int
    ) -> BudgetHold | BudgetRefusal:
        sent = self.reserve_nowait(counters, nanos, tokens)
        if sent is None:
            raise BudgetStoreDown("budget store unreachable (recent failure)")
        return await self.reserved(sent)

    async def reserved(self, sent: SentReservation) -> BudgetHold | BudgetRefusal:
        """The reservation's hold or refusal; BudgetStoreDown when Valkey did not answer."""
        if sent.outcome is None:
            await sent.wait()
        result = self.answer_of(sent)
        assert result is not None
        return result

    def answer_of(self, sent: SentReservation) -> BudgetHold | BudgetRefusal | None:
        """``reserved`` without waiting: None while the call is not answered (usually it is, by the time
        the rate-limit check's answer is read)."""
        outcome = sent.outcome
        if outcome is None:
            return None
        if isinstance(outcome, BudgetStoreDown):
            raise outcome
        if outcome == 1:  # admitted; a refusal says more
            return sent
        position, dimension, spent, held = outcome
        return BudgetRefusal(
            sent.counters[int(position) - 1],
            "nanos" if int(dimension) == 1 else "tokens",
            int(spent),
            int(held),
        )

    def settle_nowait(self, hold: BudgetHold, nanos: int, tokens: int) -> None:
        """Replace the hold by the real cost without waiting, in the next call to Valkey (within
        ``settle_within``): this process's next reservation runs after it, and until then the hold,
        never less than the cost, counts on every replica. When Valkey is unreachable the hold expires
        on its own, and accounting brings the spend back from ClickHouse."""
        self._queue.append(self._settlement(hold, nanos, tokens))
        if self._timer is None and not self._flushing:
            self._timer = asyncio.get_running_loop().call_later(self._settle_within, self._on_timer)

    def _settlement(self, hold: BudgetHold, nanos: int, tokens: int) -> SentReservation:
        return SentReservation(
            hold.id,
            hold.counters,
            nanos,
            tokens,
            self._member(hold),
            None,
            None,
            "s",
            hold.nanos,
            hold.tokens,
        )

    def _on_timer(self) -> None:
        """The settlements still waiting leave now. The timer is not cancelled when they leave sooner
        (with a reservation, usually): one timer per ``settle_within`` at most, not one per call."""
        self._timer = None
        if self._queue and not self._flushing:
            self._flush()

    async def settle(self, hold: BudgetHold, nanos: int, tokens: int) -> bool:
        """``settle_nowait``, waiting for Valkey: False when it is unreachable."""
        operation = self._settlement(hold, nanos, tokens)
        self._enqueue(operation)
        return not isinstance(await operation.wait(), BudgetStoreDown)

    def _enqueue(self, operation: SentReservation) -> None:
        self._queue.append(operation)
        if not self._flushing:
            self._flushing = True
            runner = self._redis
            if not (isinstance(runner, RespClient) and runner.flush_soon()):
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """The operations queued so far, in order, as one call (also run before every write of the
        fast client: whatever leaves for Valkey takes the waiting settlements along)."""
        self._flushing = False
        operations, self._queue = self._queue, []
        if not operations:
            return
        layout = self._layout(operations)
        scan = time.monotonic() >= self._next_scan
        if scan:
            self._next_scan = time.monotonic() + 1.0
        args: list[Any] = [self._hold_seconds, int(scan)]
        # Per set of counters: its reservations (-1: one is negative), their nanos and tokens; its
        # settlements' nanos and tokens, and what their holds held. Valkey applies each set's sums at
        # once when it can (see ``_BATCH``): summing here costs less than there.
        positions, sets = layout.positions, layout.sets
        parts: list[bytes] = []  # the operations, encoded
        settling = 0
        if len(positions) == 1:  # the busy case: one set of counters, summed in locals
            number = sets[id(operations[0].counters)]
            reserved, nanos, tokens, settled_nanos, settled_tokens, held_nanos, held_tokens = (0,) * 7
            for o in operations:
                if o.kind == "r":
                    if o.nanos < 0 or o.tokens < 0 or reserved < 0:
                        reserved = -1
                    else:
                        reserved += 1
                    nanos += o.nanos
                    tokens += o.tokens
                    parts += (_RESERVE, o.member, number)
                else:
                    settled_nanos += o.nanos
                    settled_tokens += o.tokens
                    held_nanos += o.held_nanos
                    held_tokens += o.held_tokens
                    settling += 1
                    parts += (_SETTLE, o.member, number, _two(o.nanos, o.tokens))
            sums = [
                b"%d %d %d %d %d %d %d"
                % (reserved, nanos, tokens, settled_nanos, settled_tokens, held_nanos, held_tokens)
            ]
        else:
            values = [0] * (7 * len(positions))
            for o in operations:
                at = 7 * positions[id(o.counters)] - 7
                if o.kind == "r":
                    if o.nanos < 0 or o.tokens < 0 or values[at] < 0:
                        values[at] = -1
                    else:
                        values[at] += 1
                    values[at + 1] += o.nanos
                    values[at + 2] += o.tokens
                    parts += (_RESERVE, o.member, sets[id(o.counters)])
                else:
                    values[at + 3] += o.nanos
                    values[at + 4] += o.tokens
                    values[at + 5] += o.held_nanos
                    values[at + 6] += o.held_tokens
                    settling += 1
                    parts += (_SETTLE, o.member, sets[id(o.counters)], _two(o.nanos, o.tokens))
            sums = [b"%d %d %d %d %d %d %d" % tuple(values[at : at + 7]) for at in range(0, len(values), 7)]
        if isinstance(self._redis, RespClient):  # what the fast client sends, encoded here at once
            args += (
                layout.encoded,
                Encoded(len(sums), b"".join([bulk(v) for v in sums])),  # one per set
                Encoded(3 * len(operations) + 2 * settling, b"".join(parts)),
            )
        else:
            args += layout.plain
            args += sums
            for o in operations:
                member = o.member[o.member.index(b"\r\n") + 2 : -2]
                args += (o.kind, member, positions[id(o.counters)])
                if o.kind == "s":
                    args += (o.nanos, o.tokens)
        self._call(operations, layout.keys, args, retry=True)

    def _layout(self, operations: list[SentReservation]) -> _Layout:
        """The call's keys, the counters' limits and the sets of counters its operations count against
        (with their arguments encoded): the same from one call to the next while the same requesters
        are busy, so kept for the next call."""
        last, first = self._last, operations[0].counters
        if last is not None and last.sets_of[0] is first and len(last.sets_of) == 1:
            for operation in operations:
                if operation.counters is not first:
                    break
            else:
                return last  # the busy case: one set of counters, as in the call before
        # A reservation's counters first: their limits are the ones it must be checked against (a
        # settlement may carry those of before a budget changed).
        distinct: dict[int, tuple[BudgetCounter, ...]] = {}
        for operation in operations:
            if operation.kind == "r":
                distinct.setdefault(id(operation.counters), operation.counters)
        for operation in operations:
            distinct.setdefault(id(operation.counters), operation.counters)
        signature = tuple(distinct)
        known = self._layouts.get(signature)
        if known is not None and all(a is b for a, b in zip(known.sets_of, distinct.values(), strict=True)):
            self._last = known
            return known
        keys: list[str] = [HOLDS_KEY, DUE_KEY]
        own: list[int] = []
        index: dict[str, int] = {}
        members: list[int] = []
        positions: dict[int, int] = {}
        for number, counters in enumerate(distinct.values(), 1):
            members.append(len(counters))
            for counter in counters:
                position = index.get(counter.key)
                if position is None:
                    position = index[counter.key] = len(index) + 1
                    keys.append(counter.key)
                    own += counter.own
                members.append(position)
            positions[id(counters)] = number
        plain: list[Any] = [*own, len(positions), *members]
        layout = _Layout(
            tuple(distinct.values()),
            keys,
            plain,
            Encoded(len(plain), b"".join([bulk(arg) for arg in plain])),
            positions,
            {key: bulk(number) for key, number in positions.items()},
        )
        if len(self._layouts) > 1_000:
            self._layouts = {}
        self._layouts[signature] = self._last = layout
        return layout

    def _call(
        self, operations: list[SentReservation], keys: list[str], args: list[Any], *, retry: bool
    ) -> None:
        runner = self._redis
        if retry and isinstance(runner, RespClient):
            handed = partial(self._answered, operations, keys, args, retry, True)
            if runner.evalsha_then(self._batch, keys, args, handed):
                self._handed += 1  # until its reply is read (``drain`` waits for it)
                return
        answer = partial(self._answered, operations, keys, args, retry, False)
        # Not connected yet, a redis-py client, or the script to load again.
        sent = asyncio.ensure_future(runner.evalsha(self._batch, keys, args))
        self._calls.add(sent)
        sent.add_done_callback(self._calls.discard)
        sent.add_done_callback(partial(_outcome, answer))

    def _answered(
        self,
        operations: list[SentReservation],
        keys: list[str],
        args: list[Any],
        retry: bool,
        handed: bool,
        result: Any,
    ) -> None:
        """The call's reply, error reply or exception, handed to each operation."""
        if handed:
            self._handed -= 1
            if not self._handed and self._idle is not None and not self._idle.done():
                self._idle.set_result(None)
        if retry and isinstance(result, RespError) and str(result).startswith("NOSCRIPT"):
            self._call(operations, keys, args, retry=False)  # Valkey restarted: load the script
            return
        if isinstance(result, BaseException):
            self._mark_down(result)
            down = BudgetStoreDown(str(result))
            settled = 0
            counted, spent = self.counted, self.spent
            for operation in operations:
                if operation.kind == "s":
                    # What Valkey counts, as far as this process can tell, for the fallback while it is
                    # away (a call that succeeds brings its own figures back, settlements included):
                    # the hold is gone, its real cost is spent.
                    held_nanos, held_tokens = operation.held_nanos, operation.held_tokens
                    self._unhold(operation.counters, held_nanos, held_tokens)
                    for counter in operation.counters:
                        known = counted.get(counter.key)
                        if known is not None:
                            known[0] -= held_nanos - operation.nanos
                            known[1] -= held_tokens - operation.tokens
                        known = spent.get(counter.key)
                        if known is not None:
                            known[0] += operation.nanos
                            known[1] += operation.tokens
                    settled += 1
                operation.answered(down)
            if settled:
                log.warning("could not settle %d budget holds: %s", settled, result)
            return
        counters, values = keys[2:], result[-1]
        self._remember(counters, values)
        counts = (counters, values)
        answers = iter(result)
        for operation in operations:
            if operation.kind == "r":
                operation.counts = counts
                answer = next(answers)
                if answer == 1:  # admitted: held here until it settles
                    self._hold(operation.counters, operation.nanos, operation.tokens)
                operation.answered(answer)
            else:
                self._unhold(operation.counters, operation.held_nanos, operation.held_tokens)
                operation.answered(True)

    def _hold(self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int) -> None:
        own = self.own_held
        for counter in counters:
            mine = own.get(counter.key)
            if mine is None:
                own[counter.key] = [nanos, tokens]
            else:
                mine[0] += nanos
                mine[1] += tokens

    def _unhold(self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int) -> None:
        own = self.own_held
        for counter in counters:
            mine = own.get(counter.key)
            if mine is not None:
                mine[0] -= nanos
                mine[1] -= tokens
                if mine[0] <= 0 and mine[1] <= 0:
                    del own[counter.key]

    def _remember(self, keys: list[str], values: list[int]) -> None:
        """What each counter of the call counts now (spent + held, and spent; nanos, tokens), for when
        Valkey goes away: updated in place, no new dictionary per call."""
        counted, spent = self.counted, self.spent
        if len(counted) > 100_000:
            counted.clear()
            spent.clear()
        for i, key in enumerate(keys):
            at = 4 * i
            known = counted.get(key)
            if known is None:
                counted[key] = [values[at], values[at + 1]]
                spent[key] = [values[at + 2], values[at + 3]]
            else:
                known[0], known[1] = values[at], values[at + 1]
                known = spent.get(key)
                if known is None:
                    spent[key] = [values[at + 2], values[at + 3]]
                else:
                    known[0], known[1] = values[at + 2], values[at + 3]

    async def drain(self) -> None:
        """Send what is queued and wait for the calls on their way (at shutdown): a settlement lost here
        would keep its hold for ``hold_seconds``."""
        self._flush()
        with contextlib.suppress(TimeoutError):  # each is answered within the client's own timeout
            if self._handed:
                if self._idle is None or self._idle.done():
                    self._idle = asyncio.get_running_loop().create_future()
                await asyncio.wait_for(asyncio.shield(self._idle), 2.0)
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)

    @property
    def down(self) -> bool:
        """A recent call failed: reservations skip Valkey for a moment."""
        return time.monotonic() < self._down_until

    def _mark_down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("budget store unreachable: %s", exc)
        self._down_until = time.monotonic() + self._retry_down_after


def _two(nanos: int, tokens: int) -> bytes:
    """Two numbers as RESP sends them (two bulk strings)."""
    n, t = b"%d" % nanos, b"%d" % tokens
    return b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(n), n, len(t), t)


def _outcome(answer: Callable[[Any], None], sent: asyncio.Future[Any]) -> None:
    answer(asyncio.CancelledError() if sent.cancelled() else sent.exception() or sent.result())
