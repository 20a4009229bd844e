"""A usage event as a ``usage_events`` row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aqueduct_libs.events import UsageRecorded

__all__ = ["clickhouse_time", "usage_row"]


def clickhouse_time(moment: datetime) -> str:
    """``DateTime64(3, 'UTC')`` text: naive datetimes are taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def usage_row(event: UsageRecorded, cost_nanos: int) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "occurred_at": clickhouse_time(event.occurred_at),
        "kind": event.kind,
        "token_id": event.token_id,
        "user_id": event.user_id,
        "service_account_id": event.service_account_id or "",
        "team_id": event.team_id or "",
        "org_id": event.org_id,
        "endpoint": event.endpoint,
        "model": event.model,
        "route": event.route,
        "status_code": event.status_code,
        "input_tokens": max(event.input_tokens, 0),
        "output_tokens": max(event.output_tokens, 0),
        "cached_tokens": max(event.cached_tokens, 0),
        "cost_nanos": cost_nanos,
        "latency_ms": event.latency_ms,
        "ttft_ms": event.ttft_ms,
        "streamed": event.streamed,
        "cut_short": event.cut_short,
        "tool": event.tool or "",
        "batch_id": event.batch_id or "",
    }
