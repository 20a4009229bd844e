"""Budgets at admission: reserve a request's worst-case cost before it is forwarded, settle the real cost
when its usage is known. One object the gateway calls, so every route that admits a call gets it.

The worst case is the input the tokenizer counted (plus a few tokens a chat template adds per message)
at the input price, and the output cap at the output price: the request's ``max_tokens`` (or
``max_completion_tokens``, ``max_output_tokens``; times ``n`` choices), else the model's maximum output
from the price map, else ``default_output_tokens``. Embeddings produce no output.

Far from its limits, a set of budgets' requests are admitted on a local allowance, one hold in Valkey
settled and renewed every 100 ms (``adapters.budget_leases``); near them, each request is checked in
Valkey on its own.

While Valkey is unreachable, budgets behave as the rate limits do (``limits_on_store_failure``):
"closed" refuses with 503; "open" (the default) keeps serving, each process checking on its own against
what Valkey last told it each budget had spent, plus what it holds there and admitted since: exact for
one process, and with several each may spend what was left when Valkey went away (the other replicas'
holds then are not counted: they become spend this process cannot see). Accounting's quota decisions
(from ClickHouse) still refuse a used-up budget a second or two later on every replica.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aqueduct_libs.budgets import periods_at
from aqueduct_libs.pricing import TokenClasses
from aqueduct_libs.snapshot import TokenGrant
from aqueduct_proxy.adapters.budget_leases import BudgetLeases
from aqueduct_proxy.adapters.budget_store import (
    BudgetCounter,
    BudgetHold,
    BudgetRefusal,
    BudgetStore,
    BudgetStoreDown,
    SentReservation,
)
from aqueduct_proxy.domain.budgets import budget_counters, refusal_message, worst_case
from aqueduct_proxy.domain.errors import BudgetExhaustedError, LimiterUnavailableError
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.domain.usage import TokenUsage
from aqueduct_proxy.metrics import ProxyMetrics

if TYPE_CHECKING:
    from aqueduct_proxy.application.call import Call

__all__ = ["Budgeting"]

log = logging.getLogger(__name__)

_NOTHING = (0, 0)

_PER_MESSAGE = 4  # tokens a chat template adds around each message (OpenAI's published rule of thumb)
_PER_CHAT = 3
_NO_OUTPUT = ("/embeddings",)


class Budgeting:
    def __init__(
        self,
        snapshot: Snapshot,
        store: BudgetStore | None,
        metrics: ProxyMetrics,
        *,
        fail_open: bool = True,
        default_output_tokens: int = 4096,
        leases: bool = True,
    ) -> None:
        self.snapshot = snapshot
        self.store = store
        self.metrics = metrics
        self.fail_open = fail_open
        self.default_output_tokens = default_output_tokens
        # (user, team, org) -> (the snapshot's budgets version, their counters today): the hot path
        # builds no keys or dates.
        self._counters: dict[tuple[str, str | None, str], tuple[int, tuple[BudgetCounter, ...]]] = {}
        self._counters_until = datetime.min.replace(tzinfo=UTC)
        # The fallback while Valkey is away (the store keeps both): per counter key, [nanos, tokens]
        # spent as Valkey last said plus what this process admitted and settled since, and what this
        # process holds there.
        self._spent: dict[str, list[int]] = store.spent if store is not None else {}
        self._own_held: dict[str, list[int]] = store.own_held if store is not None else {}
        # Far from their limits, a set of counters' requests are admitted on a local allowance.
        self.leases = BudgetLeases(store) if store is not None and leases else None

    def counters_of(self, grant: TokenGrant, now: datetime) -> tuple[BudgetCounter, ...]:
        """The budget counters a call of this grant counts against today (none: no budget applies).
        Looked up once per user, team and org, per day and per change of the snapshot's budgets."""
        if self.store is None or not self.snapshot.budgets:
            return ()
        if now >= self._counters_until or len(self._counters) > 10_000:
            self._counters = {}
            self._counters_until = periods_at(now)[0].end
        owner = (grant.user_id, grant.team_id, grant.org_id)
        found = self._counters.get(owner)
        if found is None or found[0] != self.snapshot.budgets_version:
            if found is not None and self.leases is not None:
                self.leases.retire(found[1])  # its limits may have changed: no more allowance on them
            counters = budget_counters(self.snapshot.budgets_of(grant), now)
            found = self._counters[owner] = (self.snapshot.budgets_version, counters)
        return found[1]

    def applies(self, call: Call) -> bool:
        return not call.free and bool(self.counters_of(call.grant, call.occurred_at))

    def _worst_case(self, call: Call) -> tuple[int, int]:
        """The dearest of the model and its fallbacks (a fallback may serve the call). The request's
        own parts (input, cap, choices) are read once, not once per model."""
        payload, route = call.payload, call.route
        input_tokens, choices = call.input_tokens, 1
        if payload is not None:
            messages = payload.get("messages")
            if isinstance(messages, list):
                input_tokens += _PER_CHAT + _PER_MESSAGE * len(messages)
            n = payload.get("n")
            if isinstance(n, int) and n > 1:
                choices = n
        no_output = call.upstream_path.endswith(_NO_OUTPUT)
        if route is None or not route.model:
            cap = 0 if no_output else call.reserved_output or self.default_output_tokens
            return worst_case(None, input_tokens, cap * choices)
        prices = self.snapshot.prices
        if not route.fallbacks:  # the usual call: one model
            price = prices.price_for(route.model)
            if no_output:
                cap = 0
            else:
                cap = (
                    call.reserved_output or (price and price.max_output_tokens) or self.default_output_tokens
                )
            return worst_case(price, input_tokens, cap * choices)
        worst_nanos = worst_tokens = 0
        for model in (route.model, *route.fallbacks):
            price = prices.price_for(model)
            if no_output:
                cap = 0
            else:
                cap = (
                    call.reserved_output or (price and price.max_output_tokens) or self.default_output_tokens
                )
            nanos, tokens = worst_case(price, input_tokens, cap * choices)
            worst_nanos, worst_tokens = max(worst_nanos, nanos), max(worst_tokens, tokens)
        return worst_nanos, worst_tokens

    async def reserve(self, call: Call) -> None:
        """Hold the request's worst case on every budget of its user, team and org, or refuse it."""
        reservation = self.begin(call)
        if reservation is not None:
            await self.complete(call, reservation)

    def begin(self, call: Call) -> SentReservation | None:
        """What the call must reserve (None: no budget applies), queued for this turn's call to Valkey,
        so that it travels with the rate-limit check; ``complete`` reads the answer. While Valkey failed
        a moment ago, nothing is sent: the reservation is answered "down" at once (no ``id``)."""
        if call.free:
            return None
        counters = self.counters_of(call.grant, call.occurred_at)
        if not counters:
            return None
        assert self.store is not None
        nanos, tokens = self._worst_case(call)
        if self.leases is not None:
            leased = self.leases.admit(counters, nanos, tokens)
            if leased is not None:
                return leased
        sent = self.store.reserve_nowait(counters, nanos, tokens)
        if sent is None:
            sent = SentReservation("", counters, nanos, tokens)
            sent.outcome = BudgetStoreDown("budget store unreachable (recent failure)")
        return sent

    def admitted(self, call: Call, reservation: SentReservation) -> bool:
        """``complete`` without a coroutine, for the usual answer (read already, admitted): True when the
        call holds its reservation now; False: ``complete`` must be awaited."""
        if reservation.outcome == 1:
            call.budget_hold = reservation
            return True
        return False

    async def complete(self, call: Call, reservation: SentReservation) -> None:
        """The call's hold, or BudgetExhaustedError (LimiterUnavailableError: Valkey down, closed)."""
        assert self.store is not None
        try:
            result = self.store.answer_of(reservation) or await self.store.reserved(reservation)
        except BudgetStoreDown as exc:
            self.metrics.limiter_failures.inc()
            if not self.fail_open:
                raise LimiterUnavailableError(
                    "Budgets cannot be checked right now; try again shortly."
                ) from exc
            result = self._reserve_here(reservation.counters, reservation.nanos, reservation.tokens)
            alone = True
        else:
            alone = False
        if isinstance(result, BudgetRefusal):
            self.metrics.budget_refusals.labels(result.counter.scope, result.counter.period.kind).inc()
            message, resets = refusal_message(result, reservation.nanos, reservation.tokens)
            if alone:
                message += " (Checked by this gateway process alone: the budget store is unreachable.)"
            raise BudgetExhaustedError(message, headers={"x-aqueduct-budget-reset": resets})
        call.budget_hold = result

    def _reserve_here(
        self, counters: tuple[BudgetCounter, ...], nanos: int, tokens: int
    ) -> BudgetHold | BudgetRefusal:
        """Valkey is away: check against what was spent when it last answered, plus what this process
        holds and admitted since (not what other replicas held then: see ``BudgetStore.spent``)."""
        spent, own = self._spent, self._own_held
        for counter in counters:
            known = spent.get(counter.key)
            if known is None:
                continue  # never seen here: nothing to check against (accounting's decision still is)
            mine = own.get(counter.key) or _NOTHING
            if counter.limit_nanos is not None and known[0] + mine[0] + nanos > counter.limit_nanos:
                return BudgetRefusal(counter, "nanos", known[0], mine[0])
            if counter.limit_tokens is not None and known[1] + mine[1] + tokens > counter.limit_tokens:
                return BudgetRefusal(counter, "tokens", known[1], mine[1])
        for counter in counters:
            known = spent.get(counter.key)
            if known is not None:
                known[0] += nanos
                known[1] += tokens
        return BudgetHold("", counters, nanos, tokens)

    def settle(self, call: Call, usage: TokenUsage | None) -> None:
        """Replace the call's hold by what its usage event says it cost (nothing, without usage), in
        the next call to Valkey (within a few milliseconds), without waiting for its answer: this
        process's next reservation runs after it all the same, and on other replicas the hold, never
        less than the cost, counts until then."""
        hold, call.budget_hold = call.budget_hold, None
        if hold is None or self.store is None:
            return
        nanos, tokens = self._cost(call, usage)
        lease = hold.lease
        if lease is not None:  # admitted on a lease: settled there, in Valkey with the lease
            lease.settle(hold.nanos, hold.tokens, nanos, tokens)
            return
        if hold.id:
            # What Valkey counts is what it answers next; the store adjusts the fallback's figures
            # itself when this settlement fails to reach it.
            self.store.settle_nowait(hold, nanos, tokens)
            return
        less_nanos, less_tokens = hold.nanos - nanos, hold.tokens - tokens
        spent = self._spent
        for counter in hold.counters:  # admitted here while Valkey was away: what it counts, as far
            known = spent.get(counter.key)  # as this process can tell
            if known is not None:
                known[0] -= less_nanos
                known[1] -= less_tokens

    def _cost(self, call: Call, usage: TokenUsage | None) -> tuple[int, int]:
        if usage is None:
            return 0, 0
        if not (
            usage.cached_tokens
            or usage.cache_write_5m_tokens
            or usage.cache_write_1h_tokens
            or usage.reasoning_tokens
        ):  # the common case, priced without building token classes: the same arithmetic
            return worst_case(
                self.snapshot.prices.price_for(call.model), usage.input_tokens, usage.output_tokens
            )
        classes = TokenClasses(
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
            usage.reasoning_tokens,
        )
        return self.snapshot.prices.cost(call.model, classes), classes.total_tokens

    async def drain(self) -> None:
        if self.leases is not None:
            await self.leases.drain()
        if self.store is not None:
            await self.store.drain()
