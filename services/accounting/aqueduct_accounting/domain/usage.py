"""A usage event as a ``usage_events`` row.

The consumer reads ``UsageRecorded`` JSON straight into rows (``usage_row_from_json``): the checks here
are the contract's required fields and types, at a fraction of the cost of building a model per event.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from aqueduct_libs.events import UsageRecorded

__all__ = [
    "InvalidUsageEventError",
    "clickhouse_time",
    "usage_row",
    "usage_row_from_json",
    "usage_rows_from_json",
]

log = logging.getLogger(__name__)

_REQUIRED_TEXT = ("event_id", "token_id", "user_id", "org_id", "endpoint", "model", "route")
_OPTIONAL_TEXT = ("service_account_id", "team_id", "tool", "batch_id", "request_id")
_COUNTS = ("input_tokens", "output_tokens", "cached_tokens")
_TEXT = _REQUIRED_TEXT + _OPTIONAL_TEXT
_INTEGERS = ("status_code", *_COUNTS)
_KINDS = frozenset(("model", "mcp", "batch"))


class InvalidUsageEventError(ValueError):
    """The message is not a ``UsageRecorded`` event (schema version 1)."""


def clickhouse_time(moment: datetime) -> str:
    """``DateTime64(3, 'UTC')`` text: naive datetimes are taken as UTC."""
    offset = moment.utcoffset()
    if offset:
        moment = moment.astimezone(UTC)
    # "YYYY-MM-DD hh:mm:ss.mmm", without any "+00:00" (years 1000-9999, as ClickHouse's own range)
    return moment.isoformat(" ", "milliseconds")[:23]


def _occurred_at(text: str) -> str:
    """``occurred_at`` as ClickHouse text. Always parsed (an impossible date is refused here, not by the
    insert); UTC with microseconds, as the proxy (orjson: ``+00:00``) and pydantic (``Z``) write it, is then
    sliced rather than formatted again (a quarter of the cost)."""
    moment = datetime.fromisoformat(text)
    if ((len(text) == 32 and text.endswith("+00:00")) or (len(text) == 27 and text[26] == "Z")) and text[
        19
    ] == ".":
        return f"{text[:10]} {text[11:23]}"
    return clickhouse_time(moment)


def usage_row(event: UsageRecorded) -> dict[str, Any]:
    """The row of an event, without its cost (priced at ingest)."""
    return usage_row_from_json(event.model_dump_json().encode())


def usage_row_from_json(payload: bytes) -> dict[str, Any]:
    """The row of one ``UsageRecorded`` message."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidUsageEventError(f"not JSON: {exc}") from exc
    return _row(data)


def usage_rows_from_json(payload: bytes) -> list[dict[str, Any]]:
    """One message's rows: a ``UsageRecorded`` object, or a JSON array of them (a publisher may batch;
    each event still carries its own id). Unreadable events of an array are dropped, the rest kept."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidUsageEventError(f"not JSON: {exc}") from exc
    if not isinstance(data, list):
        return [_row(data)]
    rows = []
    for item in data:
        try:
            rows.append(_row(item))
        except InvalidUsageEventError as exc:
            log.error("dropping an unreadable usage event of a batch: %s", exc)
    if not rows:
        raise InvalidUsageEventError("no readable usage event in the batch")
    return rows


def _row(data: Any) -> dict[str, Any]:
    # Hot path (one call per usage event): plain lookups first, then exact type checks in one pass.
    try:
        if data.get("schema_version", 1) != 1:
            raise InvalidUsageEventError("not a version 1 usage event")
        row: dict[str, Any] = {name: data[name] for name in _REQUIRED_TEXT}
        for name in _OPTIONAL_TEXT:
            row[name] = data.get(name) or ""
        row["status_code"] = data["status_code"]
        for name in _COUNTS:
            row[name] = data.get(name, 0)
        row["kind"] = data.get("kind", "model")
        row["latency_ms"] = data.get("latency_ms", 0.0)
        row["ttft_ms"] = data.get("ttft_ms")
        row["streamed"] = data.get("streamed") is True
        row["cut_short"] = data.get("cut_short") is True
        row["occurred_at"] = _occurred_at(data["occurred_at"])
    except InvalidUsageEventError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InvalidUsageEventError(f"not a usage event: {exc!r}") from exc
    for name in _TEXT:
        if type(row[name]) is not str:
            raise InvalidUsageEventError(f"{name} must be a string")
    if not row["event_id"]:
        raise InvalidUsageEventError("event_id must not be empty")
    for name in _INTEGERS:
        if type(row[name]) is not int:
            raise InvalidUsageEventError(f"{name} must be an integer")
        if row[name] < 0:
            row[name] = 0
    if row["kind"] not in _KINDS:
        raise InvalidUsageEventError("kind must be model, mcp or batch")
    if type(row["latency_ms"]) not in (int, float) or type(row["ttft_ms"]) not in (int, float, type(None)):
        raise InvalidUsageEventError("latency_ms and ttft_ms must be numbers")
    return row
