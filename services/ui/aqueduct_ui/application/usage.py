"""Use case of the usage page: a time window, a grouping, the series and totals the accounting API
reports for what the viewer may see, with ids turned into names."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aqueduct_ui.adapters.api import ApiError, UserApi, items
from aqueduct_ui.domain.charts import Series
from aqueduct_ui.domain.forms import FormError
from aqueduct_ui.domain.viewer import Viewer

__all__ = ["RANGES", "UsagePage", "UsageQuery", "load_usage_page", "resolve_query"]

# key -> (label, length, bucket)
RANGES: dict[str, tuple[str, timedelta, str]] = {
    "1h": ("Last hour", timedelta(hours=1), "minute"),
    "24h": ("Last 24 hours", timedelta(hours=24), "hour"),
    "7d": ("Last 7 days", timedelta(days=7), "hour"),
    "30d": ("Last 30 days", timedelta(days=30), "day"),
    "90d": ("Last 90 days", timedelta(days=90), "day"),
}
_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_MAX_SERIES = 6
GROUP_LABELS = {"model": "Model", "user": "User", "team": "Team", "org": "Organisation", "token": "Token"}


@dataclass(frozen=True)
class UsageQuery:
    range: str
    since: datetime
    until: datetime
    bucket: str
    group_by: str
    since_text: str = ""
    until_text: str = ""

    def params(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "group_by": self.group_by}


def _floor(moment: datetime, bucket: str) -> datetime:
    if bucket == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def resolve_query(
    viewer: Viewer,
    range_key: str | None,
    since: str | None,
    until: str | None,
    group_by: str | None,
    now: datetime | None = None,
) -> UsageQuery:
    now = now or datetime.now(UTC)
    group = group_by if group_by in viewer.usage_scopes else "model"
    if range_key == "custom" or (since and not range_key):
        try:
            start_day = date.fromisoformat((since or "").strip())
            end_day = date.fromisoformat(until.strip()) if until and until.strip() else now.date()
        except ValueError as exc:
            raise FormError("Dates must look like 2026-01-31.") from exc
        if end_day < start_day:
            raise FormError("The end date is before the start date.")
        start = datetime.combine(start_day, time.min, tzinfo=UTC)
        end = min(datetime.combine(end_day + timedelta(days=1), time.min, tzinfo=UTC), now)
        bucket = "hour" if end - start <= timedelta(days=3) else "day"
        return UsageQuery("custom", start, end, bucket, group, start_day.isoformat(), end_day.isoformat())
    key = range_key if range_key in RANGES else "7d"
    _, length, bucket = RANGES[key]
    start = _floor(now - length, bucket)
    return UsageQuery(key, start, now, bucket, group)


@dataclass(frozen=True)
class GroupRow:
    key: str
    label: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached_tokens: int = 0  # read from the prompt cache (part of the input)
    cache_write_tokens: int = 0  # written to it, kept 5 minutes or 1 hour (part of the input)
    reasoning_tokens: int = 0  # part of the output


@dataclass(frozen=True)
class UsagePage:
    query: UsageQuery
    totals: dict[str, Any]
    groups: list[GroupRow]
    requests: list[Series]
    tokens: list[Series]
    cost: list[Series]
    scopes: tuple[str, ...]


async def _labels(api: UserApi, viewer: Viewer, group_by: str) -> dict[str, str]:
    """Names for the ids the reports group by; whatever the viewer may not list keeps its id."""
    try:
        if group_by == "user":
            users = items(
                await api.directory.get("/api/users", org_id=None if viewer.admin else viewer.org_id), "users"
            )
            return {u["id"]: u.get("name") or u.get("email") or u["id"] for u in users}
        if group_by == "team":
            teams = items(
                await api.directory.get("/api/teams", org_id=None if viewer.admin else viewer.org_id), "teams"
            )
            return {t["id"]: t.get("name") or t["id"] for t in teams}
        if group_by == "token":
            tokens = items(await api.directory.get("/api/tokens"), "tokens")
            return {t["id"]: f"{t.get('name', '')} ({t.get('preview', '')})" for t in tokens}
        if group_by == "org":
            return {
                o["id"]: o.get("name") or o["id"] for o in items(await api.directory.get("/api/orgs"), "orgs")
            }
    except ApiError as exc:
        if exc.status not in (403, 404):
            raise
    return {}


def _series(
    points: list[dict[str, Any]], keys: list[str], labels: dict[str, str], query: UsageQuery, metric: str
) -> list[Series]:
    step = _STEP[query.bucket]
    buckets: list[datetime] = []
    moment = _floor(query.since, query.bucket)
    while moment < query.until:
        buckets.append(moment)
        moment += step
    values: dict[str, dict[datetime, float]] = defaultdict(dict)
    for point in points:
        at = datetime.fromisoformat(str(point["bucket"]).replace("Z", "+00:00"))
        at = _floor(at if at.tzinfo else at.replace(tzinfo=UTC), query.bucket)
        key = str(point.get("key") or "")
        group = key if key in keys else "__other__"
        value = (
            float(point.get(metric, 0))
            if metric != "tokens"
            else float(point.get("input_tokens", 0) + point.get("output_tokens", 0))
        )
        values[group][at] = values[group].get(at, 0.0) + value
    order = keys + (["__other__"] if "__other__" in values else [])
    return [
        Series(
            labels.get(k, k or "(none)") if k != "__other__" else "other",
            [(b, values[k].get(b, 0.0)) for b in buckets],
        )
        for k in order
    ]


async def load_usage_page(api: UserApi, viewer: Viewer, query: UsageQuery) -> UsagePage:
    async def reports() -> tuple[dict[str, Any], dict[str, Any]]:
        # One after the other: the embedded ClickHouse (chDB) mixes up the parameters of concurrent queries.
        summary = await api.accounting.get("/api/usage/summary", **query.params())
        series = await api.accounting.get("/api/usage/timeseries", **query.params(), bucket=query.bucket)
        return summary, series

    summary, series = await reports()
    # Accounting names users, teams, tokens and orgs (from the directory's events); the directory is asked
    # only for ids it could not name, never for every user of a large org.
    labels = {
        str(g["key"]): str(g.get("name") or g.get("email"))
        for g in summary.get("groups", [])
        if g.get("name") or g.get("email")
    }
    if (
        any(str(g.get("key") or "") not in labels for g in summary.get("groups", []))
        and query.group_by != "model"
    ):
        labels = {**await _labels(api, viewer, query.group_by), **labels}
    groups = [
        GroupRow(
            key=str(g.get("key") or ""),
            label=labels.get(str(g.get("key") or ""), str(g.get("key") or "(none)")),
            requests=int(g.get("requests", 0)),
            input_tokens=int(g.get("input_tokens", 0)),
            output_tokens=int(g.get("output_tokens", 0)),
            cost_usd=float(g.get("cost_usd", 0.0)),
            cached_tokens=int(g.get("cached_tokens", 0)),
            cache_write_tokens=int(g.get("cache_write_5m_tokens", 0))
            + int(g.get("cache_write_1h_tokens", 0)),
            reasoning_tokens=int(g.get("reasoning_tokens", 0)),
        )
        for g in summary.get("groups", [])
    ]
    groups.sort(key=lambda g: (g.cost_usd, g.requests), reverse=True)
    keys = [g.key for g in groups[:_MAX_SERIES]]
    points = list(series.get("points", []))
    return UsagePage(
        query=query,
        totals=summary.get("totals", {}),
        groups=groups,
        requests=_series(points, keys, labels, query, "requests"),
        tokens=_series(points, keys, labels, query, "tokens"),
        cost=_series(points, keys, labels, query, "cost_usd"),
        scopes=viewer.usage_scopes,
    )
