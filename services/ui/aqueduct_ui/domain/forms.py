"""Reading form fields into the values the APIs expect, with messages a person understands."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation

__all__ = [
    "BUDGET_FIELDS",
    "LIMIT_FIELDS",
    "FormError",
    "parse_api_key_env",
    "parse_budgets",
    "parse_expiry",
    "parse_limits",
    "parse_model_limits",
    "parse_moment",
    "parse_price",
    "parse_url",
    "require_text",
]

LIMIT_FIELDS = (
    ("requests_per_minute", "Requests per minute"),
    ("input_tokens_per_minute", "Input tokens per minute"),
    ("output_tokens_per_minute", "Output tokens per minute"),
)
# As the directory models budgets: dollars as decimal strings, tokens as whole numbers.
BUDGET_FIELDS = (
    ("daily_usd", "Daily budget (USD)"),
    ("monthly_usd", "Monthly budget (USD)"),
    ("daily_tokens", "Daily budget (tokens)"),
    ("monthly_tokens", "Monthly budget (tokens)"),
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class FormError(ValueError):
    """A form field does not hold what it should; the message is shown next to ``field`` (an input's
    name) when it is known, else above the form."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def require_text(value: str | None, label: str, max_length: int = 200, field: str | None = None) -> str:
    text = (value or "").strip()
    if not text:
        raise FormError(f"{label} is required.", field)
    if len(text) > max_length:
        raise FormError(f"{label} is longer than {max_length} characters.", field)
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


# A comma is a thousands separator only between groups of three digits: "5,5" or "0,15" (a decimal
# comma) would otherwise be read as 55 or 15, a budget or price ten or a hundred times what was meant.
_GROUPED = re.compile(r"[0-9]{1,3}(,[0-9]{3})+")


def _ungrouped(digits: str) -> str | None:
    """``digits`` without its thousands separators; None when a comma is anywhere else."""
    if "," not in digits:
        return digits
    return digits.replace(",", "") if _GROUPED.fullmatch(digits) else None


def _whole(text: str, label: str, field: str | None = None) -> int:
    # Only the shape is checked here; the bounds (at least 1, at most a trillion) are the directory's.
    digits = _ungrouped(text.replace("_", ""))
    if digits is None:
        raise FormError(
            f"{label} must be a whole number, with a comma only between thousands (1,000).", field
        )
    if not digits.isdigit() or len(digits) > 30:
        raise FormError(f"{label} must be a whole number.", field)
    return int(digits)


def _amount(text: str, label: str, field: str | None = None) -> Decimal:
    whole, point, fraction = text.strip().lstrip("$").partition(".")
    digits = _ungrouped(whole)
    if digits is None or "," in fraction:
        raise FormError(
            f"{label}: use a point for decimals (12.50), and a comma only between thousands (1,000).", field
        )
    try:
        amount = Decimal(digits + point + fraction)
    except InvalidOperation as exc:
        raise FormError(f"{label} must be an amount such as 25 or 12.50.", field) from exc
    if not amount.is_finite() or amount < 0:
        raise FormError(f"{label} must be zero or more.", field)
    return amount


def parse_limits(form: Mapping[str, str]) -> dict[str, int | None]:
    """Every limit field is sent: blank means "not set here, inherit from above" (None)."""
    limits: dict[str, int | None] = {}
    for key, label in LIMIT_FIELDS:
        text = (form.get(key) or "").strip()
        limits[key] = _whole(text, label, key) if text else None
    return limits


def parse_model_limits(form: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Fields ``ml:<limit>:<model>``, one row of inputs per model. Blank means "not set at this level";
    a model whose fields are all blank is left out, so the whole map is sent and blanks clear."""
    keys = {key for key, _ in LIMIT_FIELDS}
    labels = dict(LIMIT_FIELDS)
    result: dict[str, dict[str, int]] = {}
    for name, value in form.items():
        if not name.startswith("ml:"):
            continue
        _, key, model = name.split(":", 2) if name.count(":") >= 2 else (name, "", "")
        if key not in keys or not model:
            raise FormError(f"Unknown per-model limit field {name!r}.")
        text = (value or "").strip()
        if text:
            result.setdefault(model, {})[key] = _whole(text, f"{labels[key]} of {model}", name)
    return dict(sorted(result.items()))


def parse_budgets(form: Mapping[str, str]) -> dict[str, str | int | None]:
    """Every budget field is sent; blank means no budget at this level. Dollars stay decimal strings."""
    budgets: dict[str, str | int | None] = {}
    for key, label in BUDGET_FIELDS:
        text = (form.get(key) or "").strip()
        if not text:
            budgets[key] = None
        elif key.endswith("_tokens"):
            budgets[key] = _whole(text, label, key)
        else:
            budgets[key] = str(_amount(text, label, key))
    return budgets


def parse_price(value: str | None, label: str, field: str | None = None) -> str | None:
    """Dollars per million tokens; blank is None (the caller decides what blank means)."""
    text = (value or "").strip()
    return str(_amount(text, label, field)) if text else None


def parse_url(value: str | None, label: str = "URL", field: str = "url") -> str:
    url = require_text(value, label, 2000, field)
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise FormError(f"{label} must start with http:// or https://.", field)
    return url


def parse_api_key_env(value: str | None) -> str:
    """The *name* of the environment variable that holds the upstream key (never the key itself).

    Blank means "no key". A ``${NAME}`` as written in aqueduct.yaml is accepted and unwrapped.
    """
    text = (value or "").strip()
    if text.startswith("${") and text.endswith("}"):
        text = text[2:-1].strip()
    if text and not _ENV_NAME.fullmatch(text):
        raise FormError(
            "API key environment variable must be a variable name such as OPENAI_API_KEY, not the key.",
            "api_key_env",
        )
    return text
