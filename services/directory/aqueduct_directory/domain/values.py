"""Value rules shared by the aggregates: limits, budgets and model lists in their stored form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from aqueduct_directory.domain.errors import InvalidFieldError
from aqueduct_directory.domain.inputs import (
    MAX_BUDGET_TOKENS,
    MAX_BUDGET_USD,
    MAX_LIMIT,
    MAX_PRICE_PER_MILLION,
    check_amount,
    check_model_name,
    check_whole,
)
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


def clean_limits(limits: Mapping[str, Any] | None, field: str = "limits") -> dict[str, int]:
    """Only the fields that are set are stored: a missing field means "inherit from the level above"."""
    if limits is not None and not isinstance(limits, Mapping):
        raise InvalidFieldError(field, 'limits must be an object such as {"requests_per_minute": 60}')
    result: dict[str, int] = {}
    for key, value in (limits or {}).items():
        if key not in LIMIT_FIELDS:
            raise InvalidFieldError(
                f"{field}.{key}", f"unknown limit {key!r}; known: {', '.join(LIMIT_FIELDS)}"
            )
        if value is None:
            continue
        result[key] = check_whole(value, f"{field}.{key}", key.replace("_", " "), MAX_LIMIT)
    return result


def clean_model_limits(
    model_limits: Mapping[str, Any] | None, field: str = "model_limits"
) -> dict[str, dict[str, int]]:
    if model_limits is not None and not isinstance(model_limits, Mapping):
        raise InvalidFieldError(field, "model limits must map model names to limits")
    result: dict[str, dict[str, int]] = {}
    for model, limits in (model_limits or {}).items():
        name = check_model_name(model, field, "a model name")
        cleaned = clean_limits(limits, f"{field}.{name}")
        if cleaned:
            result[name] = cleaned
    return result


def clean_budgets(budgets: Mapping[str, Any] | None, field: str = "budgets") -> dict[str, Any]:
    """Money is kept as decimal strings so no float rounding ever reaches accounting; tokens as ints."""
    if budgets is not None and not isinstance(budgets, Mapping):
        raise InvalidFieldError(field, 'budgets must be an object such as {"monthly_usd": "100"}')
    result: dict[str, Any] = {}
    for key, value in (budgets or {}).items():
        where = f"{field}.{key}"
        if key not in BUDGET_FIELDS:
            raise InvalidFieldError(where, f"unknown budget {key!r}; known: {', '.join(BUDGET_FIELDS)}")
        if value is None:
            continue
        label = key.replace("_usd", " budget in USD").replace("_tokens", " budget in tokens")
        if key.endswith("_tokens"):
            result[key] = check_whole(value, where, label, MAX_BUDGET_TOKENS)
        else:
            amount = check_amount(value, where, label, MAX_BUDGET_USD, 9, allow_zero=False)
            result[key] = format(amount, "f")  # "0.000000001", never "1E-9"
    return result


def clean_models(models: Iterable[str] | None, field: str = "excluded_models") -> list[str]:
    if models is not None and (isinstance(models, str) or not isinstance(models, Iterable)):
        raise InvalidFieldError(field, "must be a list of model names")
    return sorted({check_model_name(m, field, "a model name") for m in (models or []) if m})


# Dollars per million tokens: no more than the largest per-token price a usage event may be priced at
# (aqueduct_libs.bounds; accounting refuses events beyond it), nor than the input rule allows.
_MAX_PRICE = min(Decimal(MAX_PRICE_PER_MILLION), Decimal(MAX_PRICE_NANOS_PER_TOKEN) / 1000)


def clean_price(value: Any, field: str = "price") -> str | None:
    if value is None:
        return None
    label = field.replace("_", " ")
    return format(check_amount(value, field, label, _MAX_PRICE, 6), "f")


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
