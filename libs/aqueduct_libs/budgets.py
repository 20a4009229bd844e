"""Budget periods and the Valkey layout of their spend counters, shared by the proxy (which reserves and
settles) and accounting (which reconciles them from ClickHouse).

Periods are UTC: a day from midnight, a month from the first. One counter per budget scope and period,
``aq:budget:{aqb}:<scope>:<id>:<d|m><period>``, a hash of the settled spend (``sn`` nano-dollars, ``st``
tokens) and what admitted requests still hold (``hn``, ``ht``). Every key carries the hash tag ``{aqb}``,
so one Lua script can touch a request's user, team and org counters atomically (one slot in a cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from aqueduct_libs.snapshot import BudgetRule

__all__ = [
    "DUE_KEY",
    "HOLDS_KEY",
    "MARKER_KEY",
    "Period",
    "counter_key",
    "limits_of",
    "periods_at",
]

_PREFIX = "aq:budget:{aqb}"
# Sorted set of the holds in flight, "<reservation id> <nanos> <tokens> <counter key without the prefix
# aq:budget:{aqb}:>...", by the second each expires (a crashed proxy's is released then).
DUE_KEY = f"{_PREFIX}:due"
# Hash of the holds recorded by the previous layout (reservation id -> "<nanos> <tokens> <counter
# key>...", its id alone in the due set): still released when due.
HOLDS_KEY = f"{_PREFIX}:holds"
# Written by accounting's reconciliation: when it is missing, Valkey lost its data and the counters must
# be rebuilt from ClickHouse.
MARKER_KEY = f"{_PREFIX}:reconciled"

# A counter lives this long past its period's end: a request admitted at 23:59 settles after midnight.
_KEEP_AFTER_END = timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Period:
    kind: Literal["day", "month"]
    start: datetime
    end: datetime  # when its budgets reset
    label: str  # "d20261204" or "m202612", part of the counter key

    @property
    def expire_at(self) -> int:
        """The unix second after which its counters may go."""
        return int((self.end + _KEEP_AFTER_END).timestamp())


def periods_at(now: datetime) -> tuple[Period, Period]:
    """The day and the month containing ``now`` (UTC)."""
    now = now.astimezone(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = day_start.replace(day=1)
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    return (
        Period("day", day_start, day_start + timedelta(days=1), day_start.strftime("d%Y%m%d")),
        Period("month", month_start, month_end, month_start.strftime("m%Y%m")),
    )


def counter_key(scope: str, scope_id: str, period: Period) -> str:
    return f"{_PREFIX}:{scope}:{scope_id}:{period.label}"


def limits_of(rule: BudgetRule, period: Period) -> tuple[int | None, int | None]:
    """(nano-dollars, tokens) the rule allows in that period."""
    if period.kind == "day":
        return rule.daily_nanos, rule.daily_tokens
    return rule.monthly_nanos, rule.monthly_tokens
