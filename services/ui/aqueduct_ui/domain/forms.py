"""Reading form fields into the values the APIs expect, with messages a person understands."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

__all__ = [
    "BUDGET_FIELDS",
    "LIMIT_FIELDS",
    "FormError",
    "parse_budgets",
    "parse_expiry",
    "parse_limits",
    "parse_moment",
    "require_text",
]

LIMIT_FIELDS = (
    ("requests_per_minute", "Requests per minute"),
    ("input_tokens_per_minute", "Input tokens per minute"),
    ("output_tokens_per_minute", "Output tokens per minute"),
)
BUDGET_FIELDS = (("daily_usd", "Daily budget (USD)"), ("monthly_usd", "Monthly budget (USD)"))


class FormError(ValueError):
    """A form field does not hold what it should; the message is shown next to the form."""


def require_text(value: str | None, label: str, max_length: int = 200) -> str:
    text = (value or "").strip()
    if not text:
        raise FormError(f"{label} is required.")
    if len(text) > max_length:
        raise FormError(f"{label} is longer than {max_length} characters.")
    return text


def parse_expiry(value: str | None, today: date | None = None) -> str | None:
    """A date picked in the form means "valid through that day" (UTC). Blank: never expires."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise FormError("Expiry must be a date (YYYY-MM-DD).") from exc
    if day < (today or datetime.now(UTC).date()):
        raise FormError("Expiry must be today or later.")
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC).isoformat()


def parse_moment(value: str | None) -> datetime | None:
    """A ``datetime-local`` field (taken as UTC) or a full ISO 8601 time."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FormError("Time must look like 2026-01-31T12:00.") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_limits(form: Mapping[str, str]) -> dict[str, int | None]:
    """Every limit field is sent: blank means "not set here, inherit from above" (None)."""
    limits: dict[str, int | None] = {}
    for key, label in LIMIT_FIELDS:
        text = (form.get(key) or "").strip().replace(",", "").replace("_", "")
        if not text:
            limits[key] = None
            continue
        if not text.isdigit():
            raise FormError(f"{label} must be a whole number of zero or more.")
        limits[key] = int(text)
    return limits


def parse_budgets(form: Mapping[str, str]) -> dict[str, str | None]:
    budgets: dict[str, str | None] = {}
    for key, label in BUDGET_FIELDS:
        text = (form.get(key) or "").strip().lstrip("$")
        if not text:
            budgets[key] = None
            continue
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:
            raise FormError(f"{label} must be an amount such as 25 or 12.50.") from exc
        if not amount.is_finite() or amount < 0:
            raise FormError(f"{label} must be zero or more.")
        budgets[key] = str(amount)
    return budgets
