"""Budgets per user, team and org, per UTC day and month, in dollars and in tokens; running totals of
spend per budget; and the rule that turns them into a quota decision.

Budget definitions are the directory's snapshot entries (``BudgetRule``). A budget is used up when spend
reaches it. The decision lasts until the period ends (then spend starts again from zero) or until the
budget is raised above the spend. The proxy refuses requests at admission already; the decision is what
still refuses a used-up budget while Valkey (and so admission) is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aqueduct_libs.budgets import Period, periods_at
from aqueduct_libs.pricing import format_usd
from aqueduct_libs.snapshot import BudgetRule, QuotaDecision

__all__ = ["BudgetRule", "Periods", "Spend", "decide", "quota_key"]


def quota_key(scope: str, scope_id: str) -> str:
    return f"{scope}.{scope_id}"


@dataclass(frozen=True, slots=True)
class Spend:
    """What one scope spent in the current day and month."""

    day_nanos: int = 0
    day_tokens: int = 0
    month_nanos: int = 0
    month_tokens: int = 0

    def plus(self, nanos: int, tokens: int, today: bool) -> Spend:
        return Spend(
            self.day_nanos + (nanos if today else 0),
            self.day_tokens + (tokens if today else 0),
            self.month_nanos + nanos,
            self.month_tokens + tokens,
        )

    def added(self, other: Spend) -> Spend:
        return Spend(
            self.day_nanos + other.day_nanos,
            self.day_tokens + other.day_tokens,
            self.month_nanos + other.month_nanos,
            self.month_tokens + other.month_tokens,
        )

    def at_least(self, other: Spend) -> Spend:
        """Field by field, the larger: spend within a period only grows, so the larger of two counts
        (one from ClickHouse, one that also holds events stored since) is the truer one."""
        return Spend(
            max(self.day_nanos, other.day_nanos),
            max(self.day_tokens, other.day_tokens),
            max(self.month_nanos, other.month_nanos),
            max(self.month_tokens, other.month_tokens),
        )


@dataclass(frozen=True, slots=True)
class Periods:
    day: Period
    month: Period

    @classmethod
    def containing(cls, now: datetime) -> Periods:
        return cls(*periods_at(now))

    @property
    def day_start(self) -> datetime:
        return self.day.start

    @property
    def day_end(self) -> datetime:
        return self.day.end

    @property
    def month_start(self) -> datetime:
        return self.month.start

    @property
    def month_end(self) -> datetime:
        return self.month.end


def decide(budget: BudgetRule, spend: Spend, periods: Periods, now: datetime) -> QuotaDecision | None:
    """The decision in force for this budget, or None. The monthly one wins: it lasts longer."""
    used_up: list[tuple[Literal["day", "month"], str]] = []
    if budget.monthly_nanos is not None and spend.month_nanos >= budget.monthly_nanos:
        used_up.append(("month", f"{budget.scope} monthly budget of {format_usd(budget.monthly_nanos)}"))
    if budget.monthly_tokens is not None and spend.month_tokens >= budget.monthly_tokens:
        used_up.append(("month", f"{budget.scope} monthly budget of {budget.monthly_tokens:,} tokens"))
    if budget.daily_nanos is not None and spend.day_nanos >= budget.daily_nanos:
        used_up.append(("day", f"{budget.scope} daily budget of {format_usd(budget.daily_nanos)}"))
    if budget.daily_tokens is not None and spend.day_tokens >= budget.daily_tokens:
        used_up.append(("day", f"{budget.scope} daily budget of {budget.daily_tokens:,} tokens"))
    if not used_up:
        return None
    period, label = used_up[0]
    return QuotaDecision(
        scope=budget.scope,
        scope_id=budget.scope_id,
        budget=label,
        period=period,
        until=periods.month_end if period == "month" else periods.day_end,
        decided_at=now,
    )
