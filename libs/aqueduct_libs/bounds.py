"""Bounds of a usage event, written once: the proxy keeps to them before publishing, accounting refuses an
event outside them at its door (to the dead-letter stream), and a price outside them is never applied.

They are chosen so that nothing can overflow where it is stored (``infra/clickhouse``): token counts are
``UInt64``, the cost ``Int64`` nano-dollars, ``status_code`` ``UInt16``, times ``DateTime64(3)``. Counts and
prices at their maximum multiply to a few times 1e16 nano-dollars, inside ``Int64`` (9.2e18); an event is
further refused above ``MAX_EVENT_COST_NANOS``, so that nine thousand of the dearest possible events still
sum inside ``Int64``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = [
    "EARLIEST_OCCURRED_AT",
    "MAX_EVENT_COST_NANOS",
    "MAX_FUTURE_SKEW",
    "MAX_LATENCY_MS",
    "MAX_PRICE_NANOS_PER_TOKEN",
    "MAX_STATUS_CODE",
    "MAX_TEXT_LENGTH",
    "MAX_TOKENS",
    "MIN_STATUS_CODE",
    "clamp_tokens",
    "occurred_at_problem",
    "price_in_bounds",
]

# Tokens one request may count in each of input, output and cached: a billion is far beyond any context
# window, and small enough that the cost below cannot overflow.
MAX_TOKENS = 1_000_000_000
# A price per token in nano-dollars: 10,000,000 is a cent a token ($10,000 per million tokens), over ten
# times the dearest model on sale.
MAX_PRICE_NANOS_PER_TOKEN = 10_000_000
# The most one event may cost: $1 million. Keeps every sum of events well inside Int64 (9.2e18).
MAX_EVENT_COST_NANOS = 1_000_000_000_000_000
# An HTTP status code.
MIN_STATUS_CODE = 100
MAX_STATUS_CODE = 599
# When a request may have happened: not before the product existed, and not in the future beyond what
# clocks of different machines may disagree by.
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE_SKEW = timedelta(hours=1)
# A request's latency and time to first token: a week at most (a batch line included).
MAX_LATENCY_MS = 7 * 24 * 3600 * 1000.0
# Ids, names and routes: longer than this is not an id.
MAX_TEXT_LENGTH = 1024


def clamp_tokens(count: object) -> int:
    """A token count reported by an upstream, as the proxy publishes it: an integer within
    ``0..MAX_TOKENS``. A larger count is counted as the maximum (the conservative choice for budgets; JSON
    parsers read counts beyond 64 bits as floats), a negative count or a non-number as 0."""
    if type(count) is float and count == count:  # finite or infinite, not NaN
        count = MAX_TOKENS if count >= MAX_TOKENS else int(count)
    if type(count) is not int or count < 0:
        return 0
    return min(count, MAX_TOKENS)


def occurred_at_problem(moment: datetime, now: datetime | None = None) -> str | None:
    """Why ``moment`` (aware) cannot be when a request happened, or None."""
    if moment < EARLIEST_OCCURRED_AT:
        return f"occurred_at {moment.isoformat()} is before {EARLIEST_OCCURRED_AT.date().isoformat()}"
    if moment > (now or datetime.now(UTC)) + MAX_FUTURE_SKEW:
        return f"occurred_at {moment.isoformat()} is in the future"
    return None


def price_in_bounds(nanos_per_token: float | None) -> bool:
    """A per-token price (nano-dollars) that can be applied; None (not priced) is fine."""
    return nanos_per_token is None or 0 <= nanos_per_token <= MAX_PRICE_NANOS_PER_TOKEN
