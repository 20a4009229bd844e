"""Which budget counters a request counts against, what it may cost at worst, and how a refusal reads."""

from __future__ import annotations

from datetime import datetime

from aqueduct_libs.budgets import counter_key, limits_of, periods_at
from aqueduct_libs.pricing import Price, format_usd_apart
from aqueduct_libs.snapshot import BudgetRule
from aqueduct_proxy.adapters.budget_store import BudgetCounter, BudgetRefusal
from aqueduct_proxy.domain.errors import shown

__all__ = ["budget_counters", "refusal_message", "scope_label", "worst_case"]


def scope_label(scope: str, scope_id: str, name: str) -> str:
    """Whose budget a message names: "team 'research', id 0b9f..." (the id alone when the directory gave
    no name). A long name is cut as the request's own names are (``errors.shown``)."""
    if not name:
        return f"{scope} {scope_id}"
    return f"{scope} '{shown(name)}', id {scope_id}"


def budget_counters(rules: list[BudgetRule], now: datetime) -> tuple[BudgetCounter, ...]:
    """One counter per budget rule and period that sets a limit."""
    counters = []
    for period in periods_at(now):
        for rule in rules:
            nanos, tokens = limits_of(rule, period)
            if nanos is not None or tokens is not None:
                key = counter_key(rule.scope, rule.scope_id, period)
                counters.append(
                    BudgetCounter(key, nanos, tokens, rule.scope, rule.scope_id, period, rule.name)
                )
    return tuple(counters)


def worst_case(price: Price | None, input_tokens: int, output_tokens: int) -> tuple[int, int]:
    """(nano-dollars, tokens) a request may cost at most: its counted input and its output cap. What
    ``Price.cost`` gives for plain input and output, without building its token classes (every request
    comes here)."""
    if input_tokens < 0:  # comparisons, not max(): every request comes here twice
        input_tokens = 0
    if output_tokens < 0:
        output_tokens = 0
    if price is None:
        return 0, input_tokens + output_tokens
    nanos = round(input_tokens * price.input_nanos_per_token + output_tokens * price.output_nanos_per_token)
    return nanos, input_tokens + output_tokens


def _tokens(n: int) -> str:
    return f"{n:,} tokens"


def _tokens_each(*counts: int) -> tuple[str, ...]:
    return tuple(_tokens(n) for n in counts)


def refusal_message(refusal: BudgetRefusal, worst_nanos: int, worst_tokens: int) -> tuple[str, str]:
    """The error message, and when the budget resets (ISO 8601, UTC)."""
    counter = refusal.counter
    money = refusal.dimension == "nanos"
    limit = counter.limit_nanos if money else counter.limit_tokens
    assert limit is not None
    used = refusal.spent + refusal.held
    left = max(0, limit - used)
    worst = worst_nanos if money else worst_tokens
    # Amounts that differ never read alike ("$1.00 left ... may cost up to $1.00").
    shown = format_usd_apart if money else _tokens_each
    limit_, left_, used_, held_, worst_ = shown(limit, left, used, refusal.held, worst)
    resets = counter.period.end.isoformat().replace("+00:00", "Z")
    adjective = "daily" if counter.period.kind == "day" else "monthly"
    held = f", {held_} of it held by requests in progress" if refusal.held else ""
    message = (
        f"Budget exceeded: the {counter.scope} {adjective} budget of {limit_} "
        f"({scope_label(counter.scope, counter.scope_id, counter.scope_name)}) has {left_} left (used {used_}{held}), and this "
        f"request may cost up to {worst_}. "
        f"It resets at {resets}. Ask your administrator to raise it, or lower max_tokens."
    )
    return message, resets
