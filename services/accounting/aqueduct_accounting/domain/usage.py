"""A usage event as a ``usage_events`` row.

The consumer reads ``UsageRecorded`` JSON straight into rows (``usage_row_from_json``): the checks here
are the contract's required fields and types, at a fraction of the cost of building a model per event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from aqueduct_libs.events import UsageRecorded

__all__ = ["InvalidUsageEventError", "clickhouse_time", "usage_row", "usage_row_from_json"]

_REQUIRED_TEXT = ("event_id", "token_id", "user_id", "org_id", "endpoint", "model", "route")
_OPTIONAL_TEXT = ("service_account_id", "team_id", "tool", "batch_id")
_COUNTS = ("input_tokens", "output_tokens", "cached_tokens")


class InvalidUsageEventError(ValueError):
    """The message is not a ``UsageRecorded`` event (schema version 1)."""


def clickhouse_time(moment: datetime) -> str:
    """``DateTime64(3, 'UTC')`` text: naive datetimes are taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(" ", "milliseconds")


def usage_row(event: UsageRecorded) -> dict[str, Any]:
    """The row of an event, without its cost (priced at ingest)."""
    return usage_row_from_json(event.model_dump_json().encode())


def usage_row_from_json(payload: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidUsageEventError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema_version", 1) != 1:
        raise InvalidUsageEventError("not a version 1 usage event")
    row: dict[str, Any] = {}
    for name in _REQUIRED_TEXT:
        value = data.get(name)
        if not isinstance(value, str) or (name == "event_id" and not value):
            raise InvalidUsageEventError(f"{name} must be a string")
        row[name] = value
    for name in _OPTIONAL_TEXT:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidUsageEventError(f"{name} must be a string or null")
        row[name] = value or ""
    occurred = data.get("occurred_at")
    try:
        row["occurred_at"] = clickhouse_time(datetime.fromisoformat(occurred))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidUsageEventError("occurred_at must be an ISO 8601 time") from exc
    status = data.get("status_code")
    if not isinstance(status, int) or isinstance(status, bool):
        raise InvalidUsageEventError("status_code must be an integer")
    row["status_code"] = status
    for name in _COUNTS:
        value = data.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidUsageEventError(f"{name} must be an integer")
        row[name] = max(value, 0)
    kind = data.get("kind", "model")
    if kind not in ("model", "mcp", "batch"):
        raise InvalidUsageEventError("kind must be model, mcp or batch")
    row["kind"] = kind
    latency, ttft = data.get("latency_ms", 0.0), data.get("ttft_ms")
    if not isinstance(latency, int | float) or (ttft is not None and not isinstance(ttft, int | float)):
        raise InvalidUsageEventError("latency_ms and ttft_ms must be numbers")
    row["latency_ms"], row["ttft_ms"] = latency, ttft
    row["streamed"] = data.get("streamed") is True
    row["cut_short"] = data.get("cut_short") is True
    return row
