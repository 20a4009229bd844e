"""Budget leases: a process's local allowance on a set of budget counters, far from their limits.

A lease is one ordinary hold in Valkey (a reservation like a request's, released at its deadline if the
process dies), for many requests' worst cases at once. A request whose worst case fits what the lease
has left is admitted here, with no call to Valkey, and settles here (what the lease has left grows by
its worst case less its real cost; what the lease spent, by its real cost). Every ``interval`` while the
lease spent anything, one script call settles its hold to what it spent and reserves a new one for the
requests still in flight plus a fresh allowance (the settlement runs first in that call: see
``budget_store._BATCH``): the counters' settled spend trails the real one by at most ``interval``, and
what the requests in flight may still cost stays held on every replica.

Leases are only granted far from a limit: when every counter of the set has room (its limit less what
Valkey last said it counts) for at least ``room_factor`` times the lease, and the lease is at least
``min_requests`` times the request's worst case; each renewal checks again (the lease shrinks, then
ends). Near a limit every request goes to Valkey on its own, exact across replicas: with any realistic
number of replicas, leases never keep another replica from admitting a request that would fit.

While Valkey is unreachable leases end (requests take the store's fallback); a lease's hold left in
Valkey is released at its deadline, and accounting's reconciliation brings the counters' spend back.
A renewal Valkey refuses (a limit lowered meanwhile) ends the lease: the requests in flight then settle
their real cost with no hold (a settlement of a hold that no longer exists still charges its cost).
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from aqueduct_proxy.adapters.budget_store import BudgetHold, SentReservation

if TYPE_CHECKING:
    from aqueduct_proxy.adapters.budget_store import BudgetCounter, BudgetStore

__all__ = ["BudgetLease", "BudgetLeases"]


class BudgetLease:
    """One set of counters' lease in this process. Amounts are pairs: nano-dollars and tokens."""

    __slots__ = (
        "active",
        "counters",
        "ended",
        "factor",
        "free_nanos",
        "free_tokens",
        "hold",
        "in_flight",
        "in_flight_nanos",
        "in_flight_tokens",
        "misses",
        "pending",
        "spent_nanos",
        "spent_tokens",
        "unit_nanos",
        "unit_tokens",
        "used",
    )

    def __init__(self, counters: tuple[BudgetCounter, ...], unit_nanos: int, unit_tokens: int, factor: int):
        self.counters = counters
        self.active = False  # admits requests here (once Valkey granted its hold, until it ends)
        self.ended = False  # no fresh allowance any more: what is in flight settles, then it goes
        self.hold: SentReservation | None = None  # its hold in Valkey, admitted
        self.pending: SentReservation | None = None  # the reservation of its next hold, on its way
        self.unit_nanos, self.unit_tokens = unit_nanos, unit_tokens  # a request's worst case, about
        self.factor = factor  # the fresh allowance of a renewal, in units
        self.free_nanos = self.free_tokens = 0  # what it may still admit
        self.spent_nanos = self.spent_tokens = 0  # real costs settled here since its hold was reserved
        self.in_flight = self.in_flight_nanos = self.in_flight_tokens = 0  # requests admitted, unsettled
        self.misses = 0  # requests that did not fit since the last renewal
        self.used = 0.0  # when it last admitted a request (monotonic)

    def settle(self, worst_nanos: int, worst_tokens: int, nanos: int, tokens: int) -> None:
        """A request it admitted ended, at this real cost."""
        self.in_flight -= 1
        self.in_flight_nanos -= worst_nanos
        self.in_flight_tokens -= worst_tokens
        self.spent_nanos += nanos
        self.spent_tokens += tokens
        self.free_nanos += worst_nanos - nanos
        self.free_tokens += worst_tokens - tokens


class BudgetLeases:
    def __init__(
        self,
        store: BudgetStore,
        *,
        interval: float = 0.1,
        room_factor: int = 1000,
        min_requests: int = 16,
        first_requests: int = 64,
        max_requests: int = 1 << 16,
        idle_seconds: float = 2.0,
    ) -> None:
        """``interval``: how often a lease that spent anything settles it in Valkey (and renews).
        ``room_factor``: a lease needs this many times its size of room on every counter.
        ``min_requests``, ``first_requests``, ``max_requests``: a lease's fresh allowance in requests'
        worst cases, at least, at first (doubled at each renewal while requests did not fit), at most.
        ``idle_seconds``: a lease that admitted nothing for that long ends (its allowance is given back)."""
        self.store = store
        self.interval = interval
        self.room_factor = room_factor
        self.min_requests = min_requests
        self.first_requests = first_requests
        self.max_requests = max_requests
        self.idle_seconds = idle_seconds
        self._leases: dict[int, BudgetLease] = {}  # id of a set of counters (the caller keeps it)
        self._not_before: dict[int, tuple[tuple[BudgetCounter, ...], float]] = {}  # no lease asked until
        self._ending: list[BudgetLease] = []  # ended, until what they hold and spent is settled
        self._timer: asyncio.TimerHandle | None = None
        self._ghosts = 0
        self.closed = False  # drained: no lease any more

    def admit(self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int) -> SentReservation | None:
        """The request's hold on the set's lease (answered: admitted), or None: it goes to Valkey on its
        own (a lease may be asked for it, for the requests after it)."""
        lease = self._leases.get(id(counters))
        if lease is None or lease.counters is not counters:
            self._ask(counters, nanos, tokens)
            return None
        if not lease.active or nanos > lease.free_nanos or tokens > lease.free_tokens or self.store.down:
            if lease.active:
                lease.misses += 1
                if nanos > lease.unit_nanos or tokens > lease.unit_tokens:
                    lease.unit_nanos, lease.unit_tokens = (
                        max(nanos, lease.unit_nanos),
                        max(tokens, lease.unit_tokens),
                    )
            return None
        lease.free_nanos -= nanos
        lease.free_tokens -= tokens
        lease.in_flight += 1
        lease.in_flight_nanos += nanos
        lease.in_flight_tokens += tokens
        lease.used = time.monotonic()
        return SentReservation("lease", counters, nanos, tokens, outcome=1, lease=lease)

    def retire(self, counters: tuple[BudgetCounter, ...]) -> None:
        """A set of counters replaced by another (a budget changed): its lease, if any, admits no more and
        gives its allowance back at the next tick (a new set asks for a lease of its own)."""
        lease = self._leases.get(id(counters))
        if lease is not None and lease.counters is counters:
            lease.active, lease.ended = False, True

    def _room(self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int) -> bool | None:
        """Every counter has room for ``room_factor`` times that much, as Valkey last said (None: it
        has not said yet)."""
        counted, factor = self.store.counted, self.room_factor
        for counter in counters:
            known = counted.get(counter.key)
            if known is None:
                return None
            limit = counter.limit_nanos
            if limit is not None and limit - known[0] < factor * nanos:
                return False
            limit = counter.limit_tokens
            if limit is not None and limit - known[1] < factor * tokens:
                return False
        return True

    def _ask(self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int) -> None:
        """Ask Valkey for a lease on the set, if it is far from its limits (looked at once per
        ``interval`` per set at most: a set near its limit costs a dictionary look-up per request)."""
        if self.closed:
            return
        now = time.monotonic()
        known = self._not_before.get(id(counters))
        if known is not None and known[0] is counters and now < known[1]:
            return
        room = self._room(counters, self.first_requests * nanos, self.first_requests * tokens)
        if room is None:  # the request's answer will say (its reservation goes to Valkey alone)
            return
        if not room or self.store.down:
            if len(self._not_before) > 10_000:
                self._not_before = {}
            self._not_before[id(counters)] = (counters, now + self.interval)
            return
        lease = BudgetLease(counters, nanos, tokens, self.first_requests)
        lease.used = now
        if self._reserve(lease, self.first_requests * nanos, self.first_requests * tokens):
            self._leases[id(counters)] = lease
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _reserve(self, lease: BudgetLease, fresh_nanos: int, fresh_tokens: int) -> bool:
        """Queue the reservation of the lease's next hold: its requests in flight plus a fresh
        allowance. False: Valkey failed a moment ago."""
        sent = self.store.reserve_nowait(
            lease.counters, lease.in_flight_nanos + fresh_nanos, lease.in_flight_tokens + fresh_tokens
        )
        if sent is None:
            return False
        lease.pending = sent
        lease.free_nanos, lease.free_tokens = fresh_nanos, fresh_tokens
        sent.waiter = asyncio.get_running_loop().create_future()
        sent.waiter.add_done_callback(partial(self._answered, lease, sent))
        return True

    def _answered(self, lease: BudgetLease, sent: SentReservation, _: Any) -> None:
        if lease.pending is not sent:
            return  # read already (``drain``)
        lease.pending = None
        if sent.outcome == 1:
            lease.hold = sent
            lease.active = not lease.ended
            return
        # Refused (a limit lowered meanwhile) or Valkey failed: requests go to Valkey alone. After a
        # failure what the call's settlement did is unknown: the hold is released at its deadline if it
        # is still there, and what it had spent comes back with accounting's reconciliation; what the
        # lease spent since is settled by its next call.
        lease.active, lease.ended = False, True
        lease.free_nanos = lease.free_tokens = 0

    def _tick(self) -> None:
        """Every ``interval``: settle what each lease spent and renew it; end idle ones. An ended lease
        makes way at once for a new one on its set (its requests in flight settle on it meanwhile)."""
        self._timer = None
        now = time.monotonic()
        down = self.store.down
        for key, lease in list(self._leases.items()):
            if not lease.ended and (down or now - lease.used > self.idle_seconds):
                lease.active, lease.ended = False, True
            if lease.ended:
                del self._leases[key]
                self._ending.append(lease)
            elif lease.pending is None and (lease.spent_nanos or lease.spent_tokens or lease.misses):
                self._renew(lease)
        if not down and self._ending:
            ending = []
            for lease in self._ending:
                if lease.pending is None:
                    hold = lease.hold
                    if lease.spent_nanos or lease.spent_tokens:
                        self._renew(lease)
                    elif hold is not None and (
                        hold.nanos != lease.in_flight_nanos or hold.tokens != lease.in_flight_tokens
                    ):
                        self._renew(lease)  # its allowance given back, what is in flight kept held
                if lease.hold or lease.pending or lease.in_flight or lease.spent_nanos or lease.spent_tokens:
                    ending.append(lease)
            self._ending = ending
        if self._leases or self._ending:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _renew(self, lease: BudgetLease, *, end: bool = False) -> None:
        """One call: settle the lease's hold to what it spent, then reserve its next one (the requests
        in flight, plus a fresh allowance while it stays far from the limits)."""
        fresh_nanos = fresh_tokens = 0
        if end:
            lease.active, lease.ended = False, True
        if not lease.ended:
            factor = lease.factor
            if lease.misses:
                factor = min(2 * factor, self.max_requests)
            while factor >= self.min_requests and not self._room(
                lease.counters, factor * lease.unit_nanos, factor * lease.unit_tokens
            ):
                factor //= 2
            if factor >= self.min_requests:
                lease.factor = factor
                fresh_nanos, fresh_tokens = factor * lease.unit_nanos, factor * lease.unit_tokens
            else:
                lease.active, lease.ended = False, True
        lease.misses = 0
        hold: BudgetHold | None = lease.hold
        lease.hold = None
        if hold is None and (lease.spent_nanos or lease.spent_tokens):
            # No hold any more (a renewal refused): the spend is charged all the same.
            self._ghosts += 1
            hold = BudgetHold(f"{self.store.hold_prefix}g{self._ghosts:x}", lease.counters, 0, 0)
        if hold is not None:
            self.store.settle_nowait(hold, lease.spent_nanos, lease.spent_tokens)
        lease.spent_nanos = lease.spent_tokens = 0
        if lease.in_flight or fresh_nanos or fresh_tokens:
            if not self._reserve(lease, fresh_nanos, fresh_tokens):
                lease.active, lease.ended = False, True
        else:
            lease.free_nanos = lease.free_tokens = 0

    async def drain(self) -> None:
        """End every lease (at shutdown): what each spent is settled, its allowance given back (the
        store's ``drain`` then sends it and waits)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        leases, self._leases = [*self._leases.values(), *self._ending], {}
        self._ending = []
        for lease in leases:
            lease.active, lease.ended = False, True
            pending = lease.pending
            if pending is not None:
                await pending.wait()
                self._answered(lease, pending, None)
            if not self.store.down:
                self._renew(lease, end=True)
