"""Use case: keep the quota bucket equal to the budgets that are used up, within a second or two.

Budgets are a projection of the mirrored directory events (the latest ``budgets`` field of each org,
team and user), so they survive restarts with no store of their own. Spend comes from the daily roll-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse
from aqueduct_accounting.adapters.quota_kv import QuotaBucket
from aqueduct_accounting.domain.budgets import SCOPE_OF_AGGREGATE, Budget, Periods, Spend, decide, quota_key
from aqueduct_accounting.domain.usage import clickhouse_time
from aqueduct_libs.snapshot import QuotaDecision

__all__ = ["BudgetEnforcer"]

log = logging.getLogger(__name__)

_BUDGETS = """
SELECT aggregate_type, aggregate_id, argMax(data, notification_id)
FROM directory_events
WHERE aggregate_type IN ('Org', 'Team', 'User') AND JSONHas(data, 'budgets')
GROUP BY aggregate_type, aggregate_id
"""

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
    ) -> None:
        self._ch = clickhouse
        self._quota = quota
        self._clock = clock
        self._on_decisions = on_decisions
        self._budgets: dict[str, Budget] = {}
        self._budgets_stale = True
        self._published: dict[str, QuotaDecision] | None = None
        self._wake = asyncio.Event()

    def usage_stored(self) -> None:
        self._wake.set()

    def budgets_changed(self) -> None:
        self._budgets_stale = True
        self._wake.set()

    async def _load_budgets(self) -> dict[str, Budget]:
        result = await self._ch.query(_BUDGETS)
        budgets: dict[str, Budget] = {}
        for aggregate_type, aggregate_id, data in result.rows:
            scope = SCOPE_OF_AGGREGATE[aggregate_type]
            try:
                fields = json.loads(data).get("budgets")
            except ValueError:
                continue
            budget = Budget.from_data(scope, aggregate_id, fields if isinstance(fields, dict) else None)
            if not budget.is_empty:
                budgets[quota_key(scope, aggregate_id)] = budget
        return budgets

    async def _spend(self, periods: Periods) -> dict[str, Spend]:
        parts: list[str] = []
        params: dict[str, object] = {
            "day": clickhouse_time(periods.day_start),
            "month": clickhouse_time(periods.month_start),
            "month_end": clickhouse_time(periods.month_end),
        }
        for scope, column in _COLUMN.items():
            ids = [b.scope_id for b in self._budgets.values() if b.scope == scope]
            if ids:
                parts.append(_SPEND_PART.format(scope=scope, column=column))
                params[f"{scope}_ids"] = ids
        if not parts:
            return {}
        result = await self._ch.query(" UNION ALL ".join(parts), params)
        return {
            quota_key(scope, scope_id): Spend(int(dn), int(dt), int(mn), int(mt))
            for scope, scope_id, dn, dt, mn, mt in result.rows
        }

    async def check_once(self) -> dict[str, QuotaDecision]:
        """Bring the quota bucket in line with budgets and spend; return the decisions in force."""
        if self._published is None:
            self._published = await self._quota.current()
        if self._budgets_stale:
            self._budgets_stale = False
            self._budgets = await self._load_budgets()
        now = self._clock()
        periods = Periods.containing(now)
        spend = await self._spend(periods)
        wanted: dict[str, QuotaDecision] = {}
        for key, budget in self._budgets.items():
            decision = decide(budget, spend.get(key, Spend()), periods, now)
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
        """Check after new usage or budget changes, and every ``interval`` seconds (periods end)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check_once()
            except Exception:
                self._budgets_stale = True
                self._published = None  # re-read the bucket: a write may have half-happened
                log.exception("budget check failed; retrying")
