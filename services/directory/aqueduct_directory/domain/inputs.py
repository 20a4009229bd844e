"""What an Admin may type: the rules every name, URL, email and number must meet before it is recorded.

One place for the management API, ``aqueduct.yaml`` (config apply) and the CLI, which all end in the
application's use cases. Each rule returns the cleaned value or raises ``InvalidFieldError`` naming the
field, so the API answers 422 with ``{"detail", "code", "field"}`` and the UI shows the message next to
that field. The bounds keep every value inside what stores and counters hold (money in nano-dollars as a
signed 64-bit integer, counters in Valkey as 64-bit integers).
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from aqueduct_directory.domain.errors import InvalidFieldError

__all__ = [
    "MAX_BUDGET_TOKENS",
    "MAX_BUDGET_USD",
    "MAX_LIMIT",
    "MAX_PRICE_PER_MILLION",
    "check_amount",
    "check_description",
    "check_email",
    "check_mcp_name",
    "check_model_name",
    "check_name",
    "check_slug",
    "check_url",
    "check_whole",
]

# A per-minute limit of a trillion requests or tokens is no limit at all; above it only typos remain.
MAX_LIMIT = 10**12
MAX_BUDGET_TOKENS = 10**15
# In nano-dollars a billion dollars is 10^18, inside a signed 64-bit integer (9.2 * 10^18).
MAX_BUDGET_USD = Decimal(10**9)
# Dollars per million tokens (stored per token in nano-dollars, rounded).
MAX_PRICE_PER_MILLION = Decimal(10**6)

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# ``/{slug}/v1/...`` shares the proxy's path space with its own routes.
_RESERVED_SLUGS = frozenset({"v1", "mcp", "healthz", "readyz", "metrics", "static", "api"})
_MCP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.][^@\s]{0,252}")
_URL_MAX = 2000


def _has_control(text: str, allow_newlines: bool = False) -> bool:
    allowed = "\n\r\t" if allow_newlines else ""
    return any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in text)


def check_name(value: Any, field: str, label: str, max_length: int = 100, required: bool = True) -> str:
    """A person's, team's, org's, token's or service account's name: one line of printable text."""
    text = value.strip() if isinstance(value, str) else value
    if text is None or text == "":
        if required:
            raise InvalidFieldError(field, f"{label} must not be empty")
        return ""
    if not isinstance(text, str):
        raise InvalidFieldError(field, f"{label} must be text")
    if len(text) > max_length:
        raise InvalidFieldError(field, f"{label} must be at most {max_length} characters")
    if _has_control(text):
        raise InvalidFieldError(field, f"{label} must not contain control characters")
    return text


def check_description(
    value: Any, field: str, label: str, required: bool = False, max_length: int = 1000
) -> str:
    text = value.strip() if isinstance(value, str) else value
    if text is None or text == "":
        if required:
            raise InvalidFieldError(field, f"{label} is required")
        return ""
    if not isinstance(text, str):
        raise InvalidFieldError(field, f"{label} must be text")
    if len(text) > max_length:
        raise InvalidFieldError(field, f"{label} must be at most {max_length} characters")
    if _has_control(text, allow_newlines=True):
        raise InvalidFieldError(field, f"{label} must not contain control characters")
    return text


def check_slug(value: Any, field: str = "slug") -> str:
    slug = check_name(value, field, "the endpoint slug", 63)
    if not _SLUG.fullmatch(slug):
        raise InvalidFieldError(
            field,
            f"the endpoint slug {slug!r} must be 1-63 lowercase letters, digits, '-' or '_', starting with a "
            "letter or digit (it is a part of the URL: /{slug}/v1/...)",
        )
    if slug in _RESERVED_SLUGS:
        raise InvalidFieldError(field, f"the endpoint slug {slug!r} is reserved by the gateway's own routes")
    return slug


def check_mcp_name(value: Any, field: str = "name") -> str:
    name = check_name(value, field, "the MCP server name", 63)
    if not _MCP_NAME.fullmatch(name):
        raise InvalidFieldError(
            field,
            f"the MCP server name {name!r} must be 1-63 letters, digits, '-', '_' or '.', without spaces, "
            "starting with a letter or digit (it is a part of the URL: /mcp/{name})",
        )
    return name


def check_model_name(value: Any, field: str = "name", label: str = "the model name") -> str:
    """Model names as providers write them (``gpt-4o``, ``meta-llama/Llama-3-8B``, ``model:tag``)."""
    name = check_name(value, field, label, 200)
    if any(c.isspace() for c in name):
        raise InvalidFieldError(field, f"{label} {name!r} must not contain spaces")
    return name


def check_url(value: Any, field: str = "url", label: str = "the URL") -> str:
    """Only ``http://`` and ``https://`` with a host: the gateway connects there and the UI links there."""
    url = check_name(value, field, label, _URL_MAX)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as exc:
        raise InvalidFieldError(field, f"{label} {url!r} is not a valid URL") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidFieldError(field, f"{label} must be an http:// or https:// URL with a host, not {url!r}")
    if any(c.isspace() for c in url):
        raise InvalidFieldError(field, f"{label} must not contain spaces")
    return url


def check_email(value: Any, field: str = "email") -> str:
    email = check_name(value, field, "the email", 254)
    if not _EMAIL.fullmatch(email):
        raise InvalidFieldError(field, f"{email!r} is not an email address (name@example.org)")
    return email


def check_whole(value: Any, field: str, label: str, maximum: int) -> int:
    """A count (a per-minute limit, a token budget): a whole number from 1 to ``maximum``.

    0 is refused: it would block every call silently; exclude a model or revoke a token to block.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InvalidFieldError(field, f"{label} must be a whole number")
    if value < 1:
        raise InvalidFieldError(
            field,
            f"{label} must be at least 1 (0 would block every call; leave it empty to inherit, or exclude "
            "the model to block it)",
        )
    if value > maximum:
        raise InvalidFieldError(field, f"{label} must be at most {maximum:,}")
    return value


def check_amount(
    value: Any, field: str, label: str, maximum: Decimal, places: int, allow_zero: bool = True
) -> Decimal:
    """A decimal amount of dollars from 0 (or, without ``allow_zero``, above 0) to ``maximum``, with at
    most ``places`` decimals."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise InvalidFieldError(field, f"{label} must be a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise InvalidFieldError(field, f"{label} must be a number such as 12.50") from exc
    if not amount.is_finite():
        raise InvalidFieldError(field, f"{label} must be a number such as 12.50")
    if amount < 0:
        raise InvalidFieldError(field, f"{label} must not be negative")
    if amount == 0 and not allow_zero:
        raise InvalidFieldError(
            field, f"{label} must be more than 0 (0 would block every call; leave it empty for no budget)"
        )
    if amount > maximum:
        raise InvalidFieldError(field, f"{label} must be at most {maximum:,}")
    if amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise InvalidFieldError(field, f"{label} must have at most {places} decimal places")
    return amount
