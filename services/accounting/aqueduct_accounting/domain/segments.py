"""Which table answers which part of a time window.

Roll-ups are exact for whole minutes, hours and days, so a window is cut into a middle of whole days
(read from ``usage_by_day``), edges of whole hours and minutes (``usage_by_hour``, ``usage_by_minute``)
and sub-minute ends (raw ``usage_events``). A report over 30 days reads ~30 day rows per key instead of
every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["LEVELS", "Segment", "segments"]

# Coarsest first; "raw" has no granularity.
LEVELS: tuple[str, ...] = ("day", "hour", "minute", "raw")
_STEP = {"day": timedelta(days=1), "hour": timedelta(hours=1), "minute": timedelta(minutes=1)}


@dataclass(frozen=True)
class Segment:
    level: str
    since: datetime
    until: datetime


def _floor(moment: datetime, level: str) -> datetime:
    moment = moment.astimezone(UTC)
    if level == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if level == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def _ceil(moment: datetime, level: str) -> datetime:
    floor = _floor(moment, level)
    return floor if floor == moment.astimezone(UTC) else floor + _STEP[level]


def segments(since: datetime, until: datetime, coarsest: str = "day") -> list[Segment]:
    """Disjoint segments covering [since, until), each at the coarsest level that is exact for it.

    ``coarsest`` caps the level (a series by hour cannot be read from the day roll-up)."""
    levels = LEVELS[LEVELS.index(coarsest) :]
    out: list[Segment] = []

    def cut(lo: datetime, hi: datetime, depth: int) -> None:
        if lo >= hi:
            return
        level = levels[depth]
        if level == "raw":
            out.append(Segment("raw", lo, hi))
            return
        a, b = _ceil(lo, level), _floor(hi, level)
        if a < b:
            cut(lo, a, depth + 1)
            out.append(Segment(level, a, b))
            cut(b, hi, depth + 1)
        else:
            cut(lo, hi, depth + 1)

    cut(since.astimezone(UTC), until.astimezone(UTC), 0)
    return out
