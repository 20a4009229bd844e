"""Use case: accounting's part of budgets, the source of truth behind the proxy's admission checks.

- Budget definitions come from the directory's snapshot (``budget.*`` keys of the ``auth_snapshot``
  bucket), fed in by a KV watch: nothing accounting stores can lose them.
- Running totals per budget scope for the current day and month: loaded from ClickHouse at start (and at
  every reconciliation), then kept up to date from each batch of usage events stored, without
  re-aggregating. Events read but not stored yet (a steady stream is stored every few seconds) are
  counted in decisions as soon as they are read (``usage_held``), and leave that count when stored or
  refused, so how soon a crossed budget is decided does not depend on how often ingest stores.
- Reconciliation: at start, every ``reconcile_seconds``, when a period ends, when budgets appear, and as
  soon as Valkey is found to have lost its counters, the proxies' spend counters in Valkey are raised to
  what ClickHouse holds (``SpendCounters``).
- Quota decisions: a used-up budget is written to the ``quota`` KV bucket (and lifted when raised or when
  the period ends); the proxy refuses on it even while Valkey, and so admission, is unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse
from aqueduct_accounting.adapters.quota_kv import QuotaBucket
from aqueduct_accounting.adapters.spend_counters import CounterFloor, SpendCounters, SpendCountersDown
from aqueduct_accounting.application.rollups import RollupGate
from aqueduct_accounting.domain.budget_status import BudgetLine, budget_lines
from aqueduct_accounting.domain.budgets import Periods, Spend, decide, quota_key
from aqueduct_accounting.domain.usage import clickhouse_time
from aqueduct_libs import names
from aqueduct_libs.budgets import counter_key
from aqueduct_libs.snapshot import BudgetRule, QuotaDecision

__all__ = ["BudgetEnforcer"]

log = logging.getLogger(__name__)

_SPEND_PART = """
SELECT '{scope}' AS scope, {column} AS id,
    sumIf(cost_nanos, bucket >= {{day:DateTime64(3, 'UTC')}}) AS day_nanos,
    sumIf(input_tokens + output_tokens, bucket >= {{day:DateTime64(3, 'UTC')}}) AS day_tokens,
    sum(cost_nanos) AS month_nanos,
    sum(input_tokens + output_tokens) AS month_tokens
FROM usage_by_day
WHERE bucket >= {{month:DateTime64(3, 'UTC')}} AND bucket < {{month_end:DateTime64(3, 'UTC')}}
  AND {column} IN {{{scope}_ids:Array(String)}}
GROUP BY id
"""

_COLUMN = {"user": "user_id", "team": "team_id", "org": "org_id"}


class BudgetEnforcer:
    def __init__(
        self,
        clickhouse: AsyncClickHouse,
        quota: QuotaBucket,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_decisions: Callable[[int], None] | None = None,
        counters: SpendCounters | None = None,
        reconcile_seconds: float = 30.0,
        on_reconciled: Callable[[], None] | None = None,
        gate: RollupGate | None = None,
        stored_already: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._ch = clickhouse
        self._gate = gate or RollupGate()
        self._quota = quota
        self._clock = clock
        self._on_decisions = on_decisions
        self._counters = counters
        self._reconcile_seconds = reconcile_seconds
        self._on_reconciled = on_reconciled
        self._budgets: dict[str, BudgetRule] = {}  # "team.<id>" -> its budgets
        self._budget_keys: dict[str, str] = {}  # snapshot key -> "team.<id>", to apply deletes
        self._totals: dict[str, Spend] = {}  # "team.<id>" -> spend in the periods below
        self._periods: Periods | None = None
        self._period_text: tuple[str, str] = ("", "")  # day and month starts as ClickHouse text
        self._stale = True  # reconcile at the next check
        self._reconciled_at = 0.0
        self._published: dict[str, QuotaDecision] | None = None
        # Events read and not stored yet, by id: the budget scopes each counts in and what it adds; and
        # their sums by scope. ``stored_already(event_id, occurred_at)`` tells a redelivered event (true
        # only if it is known to be stored), which must not count twice.
        self._held: dict[str, tuple[tuple[str, ...], int, int, bool]] = {}
        self._held_spend: dict[str, Spend] = {}
        self._stored_already = stored_already
        # A store (its insert, then ``usage_stored``) and a reconciliation (its read of ClickHouse, then
        # the totals raised to it) never overlap: a read between an insert and its ``usage_stored`` would
        # put that insert's events in the totals twice, for the rest of the period.
        self._counting = asyncio.Lock()
        self._wake = asyncio.Event()
        self.reconciliations = 0

    # -- inputs --------------------------------------------------------------------------------------

    def on_snapshot_put(self, key: str, value: bytes) -> None:
        if not key.startswith(names.SNAPSHOT_BUDGET_PREFIX):
            return
        try:
            rule = BudgetRule.model_validate_json(value)
        except ValidationError as exc:
            log.warning("ignoring an unreadable budget %s: %s", key, exc.errors()[:1])
            return
        self.put_budget(rule, key)

    def on_snapshot_delete(self, key: str) -> None:
        scoped = self._budget_keys.pop(key, None)
        if scoped is not None:
            self._budgets.pop(scoped, None)
            self._wake.set()

    def put_budget(self, rule: BudgetRule, snapshot_key: str | None = None) -> None:
        scoped = quota_key(rule.scope, rule.scope_id)
        if scoped not in self._budgets:
            self._stale = True  # its spend so far is not in the running totals yet
        self._budgets[scoped] = rule
        self._budget_keys[snapshot_key or names.snapshot_budget_key(rule.scope, rule.scope_id)] = scoped
        self._wake.set()

    def usage_held(self, rows: list[dict[str, Any]]) -> None:
        """Count usage rows read and not stored yet (with their ``cost_nanos``) in the decisions, until
        ``usage_stored`` or ``usage_released`` names them."""
        if not rows or self._periods is None or not self._budgets:
            return
        day_start, month_start = self._period_text
        budgets, held, spend = self._budgets, self._held, self._held_spend
        stored_already = self._stored_already
        counted = False
        for row in rows:
            event_id = row["event_id"]
            occurred = row["occurred_at"]
            if event_id in held or occurred < month_start:
                continue
            scopes = tuple(
                scoped
                for scoped in (f"user.{row['user_id']}", f"team.{row['team_id']}", f"org.{row['org_id']}")
                if scoped in budgets
            )
            if not scopes or (stored_already is not None and stored_already(event_id, occurred)):
                continue
            nanos = row.get("cost_nanos", 0)
            tokens = row["input_tokens"] + row["output_tokens"]
            today = occurred >= day_start
            held[event_id] = (scopes, nanos, tokens, today)
            for scoped in scopes:
                spend[scoped] = spend.get(scoped, Spend()).plus(nanos, tokens, today)
            counted = True
        if counted:
            self._wake.set()

    def usage_released(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rows held (``usage_held``) that are stored or will never be (refused): no longer counted as
        held."""
        held, spend = self._held, self._held_spend
        if not held:
            return
        for row in rows:
            entry = held.pop(row["event_id"], None)
            if entry is None:
                continue
            scopes, nanos, tokens, today = entry
            for scoped in scopes:
                left = spend[scoped].plus(-nanos, -tokens, today)
                if left == Spend():
                    del spend[scoped]
                else:
                    spend[scoped] = left

    def _spend(self, scoped: str, totals: dict[str, Spend]) -> Spend:
        """What a scope spent: stored (``totals``) and held."""
        spend = totals.get(scoped, Spend())
        held = self._held_spend.get(scoped)
        return spend if held is None else spend.added(held)

    def usage_stored(
        self, rows: list[dict[str, Any]] | None = None, batch: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Add newly stored usage rows (with their ``cost_nanos``) to the running totals; the rows of the
        ``batch`` they came from (stored, or found stored already) are no longer held."""
        if batch:
            self.usage_released(batch)
        if rows and self._periods is not None and self._budgets:
            day_start, month_start = self._period_text
            for row in rows:
                occurred = row["occurred_at"]
                if occurred < month_start:
                    continue
                nanos = row.get("cost_nanos", 0)
                tokens = row["input_tokens"] + row["output_tokens"]
                today = occurred >= day_start
                for scope, column in _COLUMN.items():
                    scoped = f"{scope}.{row.get(column)}"
                    if scoped in self._budgets:
                        self._totals[scoped] = self._totals.get(scoped, Spend()).plus(nanos, tokens, today)
        self._wake.set()

    # -- reconciliation --------------------------------------------------------------------------------

    async def _spend_in_clickhouse(
        self, periods: Periods, rules: list[BudgetRule] | None = None
    ) -> dict[str, Spend]:
        rules = list(self._budgets.values()) if rules is None else rules
        parts: list[str] = []
        params: dict[str, object] = {
            "day": clickhouse_time(periods.day_start),
            "month": clickhouse_time(periods.month_start),
            "month_end": clickhouse_time(periods.month_end),
        }
        for scope, column in _COLUMN.items():
            ids = [b.scope_id for b in rules if b.scope == scope]
            if ids:
                parts.append(_SPEND_PART.format(scope=scope, column=column))
                params[f"{scope}_ids"] = ids
        if not parts:
            return {}
        async with self._gate.reading():  # usage_by_day: the totals and their tail, not mid roll-up
            result = await self._ch.query(" UNION ALL ".join(parts), params)
        return {
            quota_key(scope, scope_id): Spend(int(dn), int(dt), int(mn), int(mt))
            for scope, scope_id, dn, dt, mn, mt in result.rows
        }

    def storing(self) -> asyncio.Lock:
        """Held by a store from its insert until its ``usage_stored``: no reconciliation reads meanwhile."""
        return self._counting

    async def reconcile(self, periods: Periods) -> None:
        """Running totals and Valkey's counters, raised to at least what ClickHouse holds."""
        async with self._counting:
            stored = await self._spend_in_clickhouse(periods)
            if periods != self._periods:  # a new day or month: yesterday's totals are not today's
                self._totals = {}
                self._held, self._held_spend = {}, {}  # counted in the totals when stored
                self._periods = periods
                self._period_text = (clickhouse_time(periods.day_start), clickhouse_time(periods.month_start))
            for scoped, spend in stored.items():
                self._totals[scoped] = self._totals.get(scoped, Spend()).at_least(spend)
        self._stale = False
        self._reconciled_at = time.monotonic()
        self.reconciliations += 1
        if self._counters is not None:
            await self._counters.raise_to(self._floors(periods), clickhouse_time(self._clock()))
        if self._on_reconciled is not None:
            self._on_reconciled()

    def _floors(self, periods: Periods) -> list[CounterFloor]:
        floors = []
        for scoped, rule in self._budgets.items():
            spend = self._totals.get(scoped, Spend())
            for period, nanos, tokens in (
                (periods.day, spend.day_nanos, spend.day_tokens),
                (periods.month, spend.month_nanos, spend.month_tokens),
            ):
                floors.append(
                    CounterFloor(
                        counter_key(rule.scope, rule.scope_id, period), nanos, tokens, period.expire_at
                    )
                )
        return floors

    async def _counters_lost(self) -> bool:
        if self._counters is None:
            return False
        try:
            return await self._counters.lost()
        except SpendCountersDown:
            # Down: nothing to repair yet. While it is, the proxies serve without reservations (fail
            # open), so their spend misses the counters even if Valkey keeps its data: reconcile as soon
            # as it answers again.
            self._stale = True
            return False

    # -- state, for people ---------------------------------------------------------------------------

    async def status(self, scopes: list[tuple[str, str]]) -> list[BudgetLine]:
        """Spent, remaining and reset time of every budget the given (scope, id) pairs have. From the
        running totals; straight from ClickHouse while they are not loaded yet (a budget just set)."""
        rules = [
            self._budgets[key]
            for key in dict.fromkeys(quota_key(s, i) for s, i in scopes)
            if key in self._budgets
        ]
        if not rules:
            return []
        periods = Periods.containing(self._clock())
        if self._stale or periods != self._periods:
            totals = await self._spend_in_clickhouse(periods, rules)
        else:
            totals = self._totals
        lines: list[BudgetLine] = []
        for rule in rules:
            lines.extend(
                budget_lines(rule, self._spend(quota_key(rule.scope, rule.scope_id), totals), periods)
            )
        return lines

    # -- decisions -------------------------------------------------------------------------------------

    async def check_once(self) -> dict[str, QuotaDecision]:
        """Reconcile when due; bring the quota bucket in line with budgets and running totals; return the
        decisions in force."""
        now = self._clock()
        periods = Periods.containing(now)
        if (
            self._stale
            or periods != self._periods
            or time.monotonic() - self._reconciled_at >= self._reconcile_seconds
            or await self._counters_lost()
        ):
            try:
                await self.reconcile(periods)
            except SpendCountersDown as exc:
                self._stale = True  # ClickHouse's totals are in; Valkey gets them when it is back
                log.warning("budget counters in Valkey not reconciled (%s); retrying", exc)
        if self._published is None:
            self._published = await self._quota.current()
        wanted: dict[str, QuotaDecision] = {}
        for key, budget in self._budgets.items():
            decision = decide(budget, self._spend(key, self._totals), periods, now)
            if decision is not None:
                wanted[key] = decision
        for key, decision in wanted.items():
            before = self._published.get(key)
            if before is None or (before.budget, before.period, before.until) != (
                decision.budget,
                decision.period,
                decision.until,
            ):
                await self._quota.put(key, decision)
                self._published[key] = decision
                log.info("quota decision %s: %s used up until %s", key, decision.budget, decision.until)
        for key in [k for k in self._published if k not in wanted]:
            await self._quota.delete(key)
            del self._published[key]
            log.info("quota decision %s lifted", key)
        if self._on_decisions is not None:
            self._on_decisions(len(wanted))
        return wanted

    async def run(self, interval: float) -> None:
        """Check after new usage or budget changes, and every ``interval`` seconds (periods end, Valkey
        comes back empty)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check_once()
            except Exception:
                self._stale = True
                self._published = None  # re-read the bucket: a write may have half-happened
                log.exception("budget check failed; retrying")
