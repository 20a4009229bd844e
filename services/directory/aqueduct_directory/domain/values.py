"""Value rules shared by the aggregates: limits, budgets and model lists in their stored form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aqueduct_directory.domain.errors import InvalidInputError
from aqueduct_libs.bounds import MAX_PRICE_NANOS_PER_TOKEN

__all__ = [
    "BUDGET_FIELDS",
    "LIMIT_FIELDS",
    "as_utc",
    "budget_nanos",
    "clean_budgets",
    "clean_limits",
    "clean_model_limits",
    "clean_models",
    "clean_price",
    "merge_limits",
    "price_nanos_per_token",
]

LIMIT_FIELDS = ("requests_per_minute", "input_tokens_per_minute", "output_tokens_per_minute")
BUDGET_FIELDS = ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")


def as_utc(moment: datetime) -> datetime:
    """Times without a zone are taken as UTC, so they compare with the events' aware timestamps."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def clean_limits(limits: Mapping[str, Any] | None) -> dict[str, int]:
    """Only the fields that are set are stored: a missing field means "inherit from the level above"."""
    result: dict[str, int] = {}
    for key, value in (limits or {}).items():
        if key not in LIMIT_FIELDS:
            raise InvalidInputError(f"unknown limit {key!r}; known: {', '.join(LIMIT_FIELDS)}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"limit {key} must be a non-negative integer")
        result[key] = value
    return result


def clean_model_limits(model_limits: Mapping[str, Any] | None) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {}
    for model, limits in (model_limits or {}).items():
        cleaned = clean_limits(limits)
        if cleaned:
            result[str(model)] = cleaned
    return result


def clean_budgets(budgets: Mapping[str, Any] | None) -> dict[str, Any]:
    """Money is kept as decimal strings so no float rounding ever reaches accounting; tokens as ints."""
    result: dict[str, Any] = {}
    for key, value in (budgets or {}).items():
        if key not in BUDGET_FIELDS:
            raise InvalidInputError(f"unknown budget {key!r}; known: {', '.join(BUDGET_FIELDS)}")
        if value is None:
            continue
        if key.endswith("_tokens"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInputError(f"budget {key} must be a non-negative integer")
            result[key] = value
        else:
            result[key] = str(_decimal(value, f"budget {key}"))
    return result


def clean_models(models: Iterable[str] | None) -> list[str]:
    return sorted({str(m) for m in (models or []) if str(m)})


# Dollars per million tokens: the largest per-token price an event may be priced at (aqueduct_libs.bounds).
MAX_PRICE_PER_MILLION = Decimal(MAX_PRICE_NANOS_PER_TOKEN) / 1000


def clean_price(value: Any) -> str | None:
    if value is None:
        return None
    amount = _decimal(value, "price")
    if amount > MAX_PRICE_PER_MILLION:
        raise InvalidInputError(f"a price is at most {MAX_PRICE_PER_MILLION:,} dollars per million tokens")
    return str(amount)


def price_nanos_per_token(price_per_million: str | None) -> int | None:
    """Dollars per million tokens -> integer nano-dollars per token ($1/M = 1,000 nanos per token)."""
    if price_per_million is None:
        return None
    return int((Decimal(price_per_million) * 1000).to_integral_value())


def budget_nanos(usd: Any) -> int | None:
    """A stored dollar budget (a decimal string) -> integer nano-dollars, rounded down (never above it)."""
    if usd is None or usd == "":
        return None
    try:
        return int((Decimal(str(usd)) * 1_000_000_000).to_integral_value(rounding="ROUND_FLOOR"))
    except (InvalidOperation, ValueError):
        return None


def merge_limits(*levels: Mapping[str, int] | None) -> dict[str, int]:
    """Field by field, the first level that sets a limit wins (token, user, team, org)."""
    merged: dict[str, int] = {}
    for level in levels:
        for key, value in (level or {}).items():
            merged.setdefault(key, value)
    return merged


def _decimal(value: Any, what: str) -> Decimal:
    if isinstance(value, bool):
        raise InvalidInputError(f"{what} must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidInputError(f"{what} must be a number") from exc
    if not amount.is_finite() or amount < 0:
        raise InvalidInputError(f"{what} must be a non-negative number")
    return amount
