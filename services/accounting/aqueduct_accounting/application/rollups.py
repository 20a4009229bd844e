"""Use case: repair the roll-ups after a crash.

A materialized view writes its roll-up part just after the ``usage_events`` part. A process killed between
the two leaves events whose redelivery the id check then (rightly) skips, so the roll-up would stay short.
At start, every hour that received events recently is compared with its roll-ups; a roll-up range that
disagrees is rebuilt from the raw events.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from aqueduct_accounting.adapters.clickhouse import ClickHouse
from aqueduct_accounting.domain.usage import clickhouse_time

__all__ = ["repair_rollups"]

log = logging.getLogger(__name__)

_ROLLUPS = (
    ("usage_by_minute", "toStartOfMinute(occurred_at)", timedelta(hours=1)),
    ("usage_by_hour", "toStartOfHour(occurred_at)", timedelta(hours=1)),
    ("usage_by_day", "toDateTime(toStartOfDay(occurred_at), 'UTC')", timedelta(days=1)),
)
_TOTALS = "count(), sum(input_tokens), sum(output_tokens), sum(cost_nanos)"
_ROLLED = "sum(requests), sum(input_tokens), sum(output_tokens), sum(cost_nanos)"
_ROLLUP_COLUMNS = (
    "bucket, org_id, team_id, user_id, token_id, model, requests, input_tokens, output_tokens, cached_tokens, "
    "cache_write_5m_tokens, cache_write_1h_tokens, reasoning_tokens, cost_nanos"
)
_RANGE = "{{lo:DateTime64(3, 'UTC')}} AND {column} < {{hi:DateTime64(3, 'UTC')}}"


def _as_utc(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def repair_rollups(engine: ClickHouse, recorded_since: datetime | None = None) -> list[str]:
    """Rebuild roll-up ranges that disagree with ``usage_events`` for hours written to since
    ``recorded_since`` (default: the last ten minutes of writes, when the process last ran); return the
    ranges rebuilt (``table@start``)."""
    if recorded_since is None:
        last = engine.query("SELECT count(), max(recorded_at) FROM usage_events").rows[0]
        if not int(last[0]):
            return []
        recorded_since = _as_utc(last[1]) - timedelta(minutes=10)
    hours = engine.query(
        "SELECT DISTINCT toStartOfHour(occurred_at) FROM usage_events WHERE recorded_at >= {since:DateTime64(3, 'UTC')}",
        {"since": clickhouse_time(recorded_since)},
    ).rows
    rebuilt: list[str] = []
    checked: set[tuple[str, datetime]] = set()
    for (hour_value,) in hours:
        hour = _as_utc(hour_value)
        for table, bucket_expression, span in _ROLLUPS:
            lo = hour if span == timedelta(hours=1) else hour.replace(hour=0)
            if (table, lo) in checked:
                continue
            checked.add((table, lo))
            params = {"lo": clickhouse_time(lo), "hi": clickhouse_time(lo + span)}
            raw = engine.query(
                f"SELECT {_TOTALS} FROM usage_events WHERE occurred_at >= {_RANGE.format(column='occurred_at')}",
                params,
            ).rows
            rolled = engine.query(
                f"SELECT {_ROLLED} FROM {table} WHERE bucket >= {_RANGE.format(column='bucket')}", params
            ).rows
            if [[int(v) for v in row] for row in raw] == [[int(v or 0) for v in row] for row in rolled]:
                continue
            log.warning("roll-up %s disagrees with usage_events from %s; rebuilding", table, lo)
            engine.execute(
                f"ALTER TABLE {table} DELETE WHERE bucket >= {_RANGE.format(column='bucket')} "
                "SETTINGS mutations_sync = 2",
                params,
            )
            engine.execute(
                f"INSERT INTO {table} ({_ROLLUP_COLUMNS}) SELECT {bucket_expression} AS bucket, org_id, team_id, "
                "user_id, token_id, model, count() AS requests, sum(input_tokens), sum(output_tokens), "
                "sum(cached_tokens), sum(cache_write_5m_tokens), sum(cache_write_1h_tokens), sum(reasoning_tokens), "
                f"sum(cost_nanos) FROM usage_events WHERE occurred_at >= {_RANGE.format(column='occurred_at')} "
                "GROUP BY bucket, org_id, team_id, user_id, token_id, model",
                params,
            )
            rebuilt.append(f"{table}@{lo.isoformat()}")
    return rebuilt
