"""Budgets per user, team and org, per UTC day and month, in dollars and in tokens; and the rule that
turns spend into a quota decision.

A budget is used up when spend reaches it. The decision lasts until the period ends (then spend starts
again from zero) or until the budget is raised above the spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from aqueduct_libs.snapshot import QuotaDecision

__all__ = [
    "SCOPE_OF_AGGREGATE",
    "Budget",
    "Periods",
    "Spend",
    "decide",
    "quota_key",
]

Scope = Literal["user", "team", "org"]

SCOPE_OF_AGGREGATE: dict[str, Scope] = {"User": "user", "Team": "team", "Org": "org"}


def quota_key(scope: str, scope_id: str) -> str:
    return f"{scope}.{scope_id}"


def _usd_nanos(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(Decimal(str(value)) * 1_000_000_000)
    except (InvalidOperation, ValueError):
        return None


def _tokens(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


@dataclass(frozen=True)
class Budget:
    scope: Scope
    scope_id: str
    daily_nanos: int | None = None
    monthly_nanos: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    @classmethod
    def from_data(cls, scope: Scope, scope_id: str, budgets: dict[str, Any] | None) -> Budget:
        """From the directory's ``budgets`` field: dollars as decimal strings (or numbers), tokens as ints."""
        budgets = budgets or {}
        return cls(
            scope,
            scope_id,
            daily_nanos=_usd_nanos(budgets.get("daily_usd")),
            monthly_nanos=_usd_nanos(budgets.get("monthly_usd")),
            daily_tokens=_tokens(budgets.get("daily_tokens")),
            monthly_tokens=_tokens(budgets.get("monthly_tokens")),
        )

    @property
    def is_empty(self) -> bool:
        return all(
            v is None for v in (self.daily_nanos, self.monthly_nanos, self.daily_tokens, self.monthly_tokens)
        )


@dataclass(frozen=True)
class Spend:
    day_nanos: int = 0
    day_tokens: int = 0
    month_nanos: int = 0
    month_tokens: int = 0


@dataclass(frozen=True)
class Periods:
    day_start: datetime
    day_end: datetime
    month_start: datetime
    month_end: datetime

    @classmethod
    def containing(cls, now: datetime) -> Periods:
        now = now.astimezone(UTC)
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        month_start = day_start.replace(day=1)
        month_end = (month_start + timedelta(days=32)).replace(day=1)
        return cls(day_start, day_start + timedelta(days=1), month_start, month_end)


def _money(nanos: int) -> str:
    return f"${Decimal(nanos) / Decimal(1_000_000_000):,.2f}"


def decide(budget: Budget, spend: Spend, periods: Periods, now: datetime) -> QuotaDecision | None:
    """The decision in force for this budget, or None. The monthly one wins: it lasts longer."""
    used_up: list[tuple[Literal["day", "month"], str]] = []
    if budget.monthly_nanos is not None and spend.month_nanos >= budget.monthly_nanos:
        used_up.append(("month", f"{budget.scope} monthly budget of {_money(budget.monthly_nanos)}"))
    if budget.monthly_tokens is not None and spend.month_tokens >= budget.monthly_tokens:
        used_up.append(("month", f"{budget.scope} monthly budget of {budget.monthly_tokens:,} tokens"))
    if budget.daily_nanos is not None and spend.day_nanos >= budget.daily_nanos:
        used_up.append(("day", f"{budget.scope} daily budget of {_money(budget.daily_nanos)}"))
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
