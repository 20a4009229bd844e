"""Use cases: usage and cost reports (totals, time series, top-N, CSV) and read-only SQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aqueduct_accounting.adapters.analyst_sql import AnalystQueries
from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, QueryResult
from aqueduct_accounting.application.names import latest_names
from aqueduct_accounting.application.rollups import LATEST_MARK, RollupGate
from aqueduct_accounting.domain.pricing import nanos_to_usd
from aqueduct_accounting.domain.readonly_sql import check_read_only
from aqueduct_accounting.domain.scope import UsageFilter, Viewer, scope_predicate
from aqueduct_accounting.domain.segments import segments
from aqueduct_accounting.domain.usage import clickhouse_time

__all__ = ["GROUPS", "BadReportRequestError", "ReportWindow", "Reports"]

GroupBy = Literal["model", "user", "team", "org", "token"]
Bucket = Literal["minute", "hour", "day"]

GROUPS: dict[str, str] = {
    "model": "model",
    "user": "user_id",
    "team": "team_id",
    "org": "org_id",
    "token": "token_id",
}
_BUCKETS = {"minute": "toStartOfMinute", "hour": "toStartOfHour", "day": "toStartOfDay"}
_ORDER = {"cost": "cost_nanos", "tokens": "input_tokens + output_tokens", "requests": "requests"}
_METRICS = (
    "sum(requests) AS requests, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, "
    "sum(cached_tokens) AS cached_tokens, sum(cache_write_5m_tokens) AS cache_write_5m_tokens, "
    "sum(cache_write_1h_tokens) AS cache_write_1h_tokens, sum(reasoning_tokens) AS reasoning_tokens, "
    "sum(cost_nanos) AS cost_nanos"
)
# Per segment level: the table, its time column, how it counts requests, and which of its rows. Whole
# days, hours and minutes are read from the roll-ups (usage_totals) plus, in one more part, the events
# recorded since the latest mark (the tail, not rolled up yet: application/rollups.py); the rest from
# the events. The mark is read once, under the roll-up gate.
_SOURCES = {
    "day": ("usage_totals", "bucket", "requests", "grain = 'day'"),
    "hour": ("usage_totals", "bucket", "requests", "grain = 'hour'"),
    "minute": ("usage_totals", "bucket", "requests", "grain = 'minute'"),
    "raw": ("usage_events", "occurred_at", "toUInt64(1)", "1"),
}
_TAIL = "toUnixTimestamp64Milli(recorded_at) >= {mark:Int64}"
_NAME_COLUMNS = {
    "user": ("user_name", "user_email"),
    "team": ("team_name",),
    "token": ("token_name",),
    "org": ("org_name",),
}
METRIC_NAMES = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "cost_nanos",
)


class BadReportRequestError(ValueError):
    """A report parameter is out of range (unknown grouping, until before since, ...)."""


@dataclass(frozen=True)
class ReportWindow:
    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise BadReportRequestError("until must be after since")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    text = str(value)
    return text.replace(" ", "T") + ("" if text.endswith("Z") else "Z")


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {name: int(row[name]) for name in METRIC_NAMES}
    out["cost_usd"] = nanos_to_usd(out["cost_nanos"])
    return out


def _part(table: str, time_column: str, requests: str, rows: str, where: str) -> str:
    return (
        f"SELECT toDateTime({time_column}, 'UTC') AS t, org_id, team_id, user_id, token_id, model, "
        f"{requests} AS requests, input_tokens, output_tokens, cached_tokens, cache_write_5m_tokens, "
        f"cache_write_1h_tokens, reasoning_tokens, cost_nanos FROM {table} WHERE {rows} AND {where}"
    )


def _sql(parts: list[str], keys: list[str], order: str | None, limit: int | None) -> str:
    select = ", ".join([*keys, _METRICS])
    sql = f"SELECT {select} FROM ({' UNION ALL '.join(parts)})"
    if keys:
        sql += " GROUP BY " + ", ".join(k.rsplit(" AS ", 1)[1] for k in keys)
    if order is not None:
        sql += f" ORDER BY {_ORDER[order]} DESC, key"
    elif keys:
        sql += " ORDER BY " + ", ".join(k.rsplit(" AS ", 1)[1] for k in keys)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def _row(columns: list[str], values: list[Any], bucket: str | None, group_by: str | None) -> dict[str, Any]:
    row = dict(zip(columns, values, strict=True))
    if bucket is None and group_by is None and int(row["requests"]) == 0:
        row = {name: 0 for name in METRIC_NAMES}
    out: dict[str, Any] = {}
    if bucket is not None:
        out["bucket"] = _iso(row["bucket"])
    if group_by is not None:
        out["key"] = row["key"]
    out |= _metrics(row)
    return out


class Reports:
    def __init__(
        self,
        clickhouse: AsyncClickHouse,
        analyst: AnalystQueries,
        sql_max_rows: int = 10_000,
        gate: RollupGate | None = None,
        newest_stamp: Callable[[], int | None] = lambda: None,
    ) -> None:
        """``newest_stamp``: no stored event was recorded after it (``StoreClock.newest_stamp``; None:
        unknown); a report skips the tail when the latest mark is later."""
        self._ch = clickhouse
        self._analyst = analyst
        self._sql_max_rows = sql_max_rows
        self._gate = gate or RollupGate()
        self._newest_stamp = newest_stamp

    async def _grouped(
        self,
        viewer: Viewer,
        wanted: UsageFilter,
        window: ReportWindow,
        group_by: str | None,
        bucket: str | None = None,
        order: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        if group_by is not None and group_by not in GROUPS:
            raise BadReportRequestError(f"group_by must be one of {', '.join(GROUPS)}")
        if bucket is not None and bucket not in _BUCKETS:
            raise BadReportRequestError(f"bucket must be one of {', '.join(_BUCKETS)}")
        where, params = scope_predicate(viewer, wanted)
        keys: list[str] = []
        if bucket is not None:
            keys.append(f"{_BUCKETS[bucket]}(t) AS bucket")
        if group_by is not None:
            keys.append(f"{GROUPS[group_by]} AS key")
        parts, rolled = [], []
        for n, segment in enumerate(segments(window.since, window.until, coarsest=bucket or "day")):
            table, time_column, requests, which = _SOURCES[segment.level]
            params[f"s{n}"] = clickhouse_time(segment.since)
            params[f"u{n}"] = clickhouse_time(segment.until)
            span = f"{{time}} >= {{{{s{n}:DateTime64(3, 'UTC')}}}} AND {{time}} < {{{{u{n}:DateTime64(3, 'UTC')}}}}"
            parts.append(
                _part(table, time_column, requests, f"{which} AND {span.format(time=time_column)}", where)
            )
            if segment.level != "raw":
                rolled.append(f"({span.format(time='occurred_at')})")
        tail = f"{_TAIL} AND ({' OR '.join(rolled)})" if rolled else ""
        async with self._gate.reading():
            params["mark"] = mark = int((await self._ch.query(LATEST_MARK)).rows[0][0] or 0) * 1000
            newest = self._newest_stamp()
            if tail and (newest is None or newest >= mark):  # else nothing was recorded since the mark
                parts.append(_part("usage_events", "occurred_at", "toUInt64(1)", tail, where))
            result = await self._ch.query(_sql(parts, keys, order, limit), params)
        return [_row(result.columns, values, bucket, group_by) for values in result.rows]

    async def summary(
        self, viewer: Viewer, wanted: UsageFilter, window: ReportWindow, group_by: str | None
    ) -> dict[str, Any]:
        if group_by:
            groups = await self._grouped(viewer, wanted, window, group_by)
            # Each group's name (and a user's e-mail), so screens need not fetch every user to label them.
            named = await latest_names(self._ch, group_by, [str(g["key"]) for g in groups])
            for g in groups:
                if str(g["key"]) in named:
                    g["name"], g["email"] = named[str(g["key"])]
            totals = {name: sum(g[name] for g in groups) for name in METRIC_NAMES}
            totals["cost_usd"] = nanos_to_usd(totals["cost_nanos"])
        else:
            groups = []
            totals = (await self._grouped(viewer, wanted, window, None))[0]
        return {
            "since": _iso(window.since),
            "until": _iso(window.until),
            "group_by": group_by,
            "groups": groups,
            "totals": totals,
        }

    async def timeseries(
        self, viewer: Viewer, wanted: UsageFilter, window: ReportWindow, bucket: str, group_by: str | None
    ) -> dict[str, Any]:
        points = await self._grouped(viewer, wanted, window, group_by, bucket=bucket)
        return {
            "since": _iso(window.since),
            "until": _iso(window.until),
            "bucket": bucket,
            "group_by": group_by,
            "points": points,
        }

    async def top(
        self, viewer: Viewer, wanted: UsageFilter, window: ReportWindow, group_by: str, order: str, limit: int
    ) -> dict[str, Any]:
        if order not in _ORDER:
            raise BadReportRequestError(f"order_by must be one of {', '.join(_ORDER)}")
        if not 1 <= limit <= 1000:
            raise BadReportRequestError("limit must be between 1 and 1000")
        rows = await self._grouped(viewer, wanted, window, group_by, order=order, limit=limit)
        return {"since": _iso(window.since), "until": _iso(window.until), "group_by": group_by, "top": rows}

    async def export_csv(
        self,
        viewer: Viewer,
        wanted: UsageFilter,
        window: ReportWindow,
        group_by: str | None,
        bucket: str | None,
    ) -> str:
        group = group_by or "model"
        rows = await self._grouped(viewer, wanted, window, group, bucket=bucket)
        # Next to each id, the name people know it by (users also their e-mail), as the directory last said.
        named = await latest_names(self._ch, group, [str(r["key"]) for r in rows])
        name_columns = _NAME_COLUMNS.get(group, ())
        header = [*(["bucket"] if bucket else []), group, *name_columns, *METRIC_NAMES, "cost_usd"]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        for row in rows:
            values = [*([row["bucket"]] if bucket else []), row["key"]]
            values += list(named.get(str(row["key"]), ("", "")))[: len(name_columns)]
            values += [row[name] for name in METRIC_NAMES] + [f"{row['cost_usd']:.9f}"]
            writer.writerow(values)
        return out.getvalue()

    async def sql(self, query: str) -> QueryResult:
        # Parsed by the engine, checked here, run on the read-only connection (which enforces read-only
        # and the limits on its own): the same steps for chDB and a ClickHouse server.
        parsed = await self._analyst.parse(query)
        statement = check_read_only(parsed, await self._analyst.table_functions(), self._analyst.database)
        async with self._gate.reading():  # the roll-up views read the totals and their tail
            result = await self._analyst.run(statement)
        # "break" stops at a block boundary, so the engine may hand back a little more than asked.
        return QueryResult(result.columns, result.rows[: self._sql_max_rows])
