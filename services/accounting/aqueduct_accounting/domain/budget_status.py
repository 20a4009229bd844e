"""What a budget has left: one line per limit (daily or monthly, dollars or tokens) with what is spent,
what remains and when it resets. Read by people (the UI's Tokens, Teams and Usage pages), so every amount
also comes as readable text (``$0.002``, never ``$0.00`` for a non-zero amount)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aqueduct_accounting.domain.budgets import Periods, Spend
from aqueduct_libs.pricing import format_usd
from aqueduct_libs.snapshot import BudgetRule

__all__ = ["BudgetLine", "budget_lines"]


@dataclass(frozen=True, slots=True)
class BudgetLine:
    scope: Literal["user", "team", "org"]
    scope_id: str
    period: Literal["day", "month"]
    unit: Literal["usd", "tokens"]
    limit: int  # nano-dollars or tokens
    spent: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.spent)

    @property
    def used_up(self) -> bool:
        return self.spent >= self.limit

    def _text(self, amount: int) -> str:
        return format_usd(amount) if self.unit == "usd" else f"{amount:,} tokens"

    def as_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "scope_id": self.scope_id,
            "period": self.period,
            "unit": self.unit,
            "limit": self.limit,
            "spent": self.spent,
            "remaining": self.remaining,
            "used_up": self.used_up,
            "resets_at": self.resets_at.isoformat(),
            "limit_text": self._text(self.limit),
            "spent_text": self._text(self.spent),
            "remaining_text": self._text(self.remaining),
        }


def budget_lines(rule: BudgetRule, spend: Spend, periods: Periods) -> list[BudgetLine]:
    """The limits ``rule`` sets, each with its spend in the current period."""
    candidates: list[tuple[Literal["day", "month"], Literal["usd", "tokens"], int | None, int, datetime]] = [
        ("day", "usd", rule.daily_nanos, spend.day_nanos, periods.day_end),
        ("day", "tokens", rule.daily_tokens, spend.day_tokens, periods.day_end),
        ("month", "usd", rule.monthly_nanos, spend.month_nanos, periods.month_end),
        ("month", "tokens", rule.monthly_tokens, spend.month_tokens, periods.month_end),
    ]
    return [
        BudgetLine(rule.scope, rule.scope_id, period, unit, limit, spent, resets_at)
        for period, unit, limit, spent, resets_at in candidates
        if limit is not None
    ]
