"""A usage event as a ``usage_events`` row.

The consumer reads ``UsageRecorded`` JSON straight into rows (``usage_row_from_json``): the checks here
are the contract's required fields and types, and the bounds of ``aqueduct_libs.bounds`` (so that every
value fits its column), at a fraction of the cost of building a model per event. An event out of bounds is
refused whole, never stored half-right.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

from aqueduct_accounting.domain.pricing import PriceBook, TokenClasses
from aqueduct_libs import bounds
from aqueduct_libs.events import UsageRecorded

__all__ = [
    "TOKEN_COUNTS",
    "InvalidUsageEventError",
    "RejectedEvent",
    "UsageMessage",
    "check_stored_row",
    "clickhouse_time",
    "row_cost",
    "token_classes",
    "usage_message_from_json",
    "usage_message_parts",
    "usage_row",
    "usage_row_from_json",
    "usage_rows_from_json",
]

log = logging.getLogger(__name__)

_REQUIRED_TEXT = ("event_id", "token_id", "user_id", "org_id", "endpoint", "model", "route")
_OPTIONAL_TEXT = ("service_account_id", "team_id", "tool", "batch_id", "request_id", "alias")
_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)
_TEXT = _REQUIRED_TEXT + _OPTIONAL_TEXT
TOKEN_COUNTS = _COUNTS  # every token count of a row, each within 0..bounds.MAX_TOKENS
_KINDS = frozenset(("model", "mcp", "batch"))


class InvalidUsageEventError(ValueError):
    """The message is not a ``UsageRecorded`` event (schema version 1), or one out of bounds."""


@dataclass(frozen=True)
class RejectedEvent:
    """One event of a message that cannot be stored: its position in the message, its text, why."""

    index: int | None  # None: the message itself (a lone event)
    payload: bytes
    reason: str


@dataclass
class UsageMessage:
    """One message's rows, and its events that were refused (the message's good events are kept)."""

    rows: list[dict[str, Any]]
    rejected: list[RejectedEvent] = field(default_factory=list)


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


_EARLIEST = clickhouse_time(bounds.EARLIEST_OCCURRED_AT)


def _latest(now: datetime | None = None) -> str:
    """The latest ``occurred_at`` accepted now, as ClickHouse text (which sorts as time)."""
    return clickhouse_time((now or datetime.now(UTC)) + bounds.MAX_FUTURE_SKEW)


class _LatestBound:
    """``_latest()`` kept for a second rather than computed for every message (it cost as much as reading
    an event). Time goes forward, so an event at or before the kept bound is at or before the current one;
    an event past it is checked against a bound computed then, as before. Computed again every second all
    the same, so that a clock set back is followed."""

    __slots__ = ("_at", "_text")

    def __init__(self) -> None:
        self._text = ""
        self._at = -1.0

    def admits(self, occurred_at: str) -> bool:
        if occurred_at <= self._text and time.monotonic() - self._at < 1.0:
            return True
        self._text, self._at = _latest(), time.monotonic()
        return occurred_at <= self._text


_LATEST = _LatestBound()


def usage_row_from_json(payload: bytes) -> dict[str, Any]:
    """The row of one ``UsageRecorded`` message."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidUsageEventError(f"not JSON: {exc}") from exc
    return _row(data, None)


def usage_message_from_json(
    payload: bytes, now: datetime | None = None, cost: Callable[[dict[str, Any]], int] | None = None
) -> UsageMessage:
    """One message (a ``UsageRecorded`` object or a JSON array of them): the rows of its good events, and
    each bad event with its reason. ``cost`` (nano-dollars of a row) refuses an event dearer than
    ``bounds.MAX_EVENT_COST_NANOS``. Raises ``InvalidUsageEventError`` when the message is no event at all
    (not JSON, an empty array, ...) or is a lone bad event."""
    latest = None if now is None else _latest(now)
    rows = _message_rows(payload, latest, cost)
    if rows is not None:
        return UsageMessage(rows)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidUsageEventError(f"not JSON: {exc}") from exc
    if not isinstance(data, list):
        return UsageMessage([_priced_row(data, latest, cost)])
    if not data:
        raise InvalidUsageEventError("an empty array holds no usage event")
    message = UsageMessage([])
    for index, item in enumerate(data):
        try:
            message.rows.append(_priced_row(item, latest, cost))
        except InvalidUsageEventError as exc:
            message.rejected.append(RejectedEvent(index, orjson.dumps(item), str(exc)))
    return message


def usage_message_parts(
    payload: bytes, read: Callable[[bytes], UsageMessage]
) -> list[tuple[int, bytes, UsageMessage]]:
    """The events of a message holding a JSON array, one by one as ``(index, event text, read(text))``,
    to find which of them a store refuses; events refused by ``read`` are left out (already refused)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(data, list):
        return []
    parts = []
    for index, item in enumerate(data):
        text = orjson.dumps(item)
        try:
            part = read(text)
        except InvalidUsageEventError:
            continue
        parts.append((index, text, part))
    return parts


def check_stored_row(row: dict[str, Any]) -> None:
    """Raise ``InvalidUsageEventError`` if a stored ``usage_events`` row (as a dict) is out of bounds."""
    event = {**row, "occurred_at": str(row["occurred_at"]).replace(" ", "T") + "+00:00"}
    _row(event, None)


def _priced_row(
    data: Any, latest: str | None, cost: Callable[[dict[str, Any]], int] | None
) -> dict[str, Any]:
    row = _row(data, latest)
    if cost is not None:
        nanos = cost(row)
        if not 0 <= nanos <= bounds.MAX_EVENT_COST_NANOS:
            raise InvalidUsageEventError(
                f"the event costs {nanos} nano-dollars, outside 0..{bounds.MAX_EVENT_COST_NANOS}"
            )
        row["cost_nanos"] = nanos  # priced once: ingest keeps it
    return row


def usage_rows_from_json(payload: bytes) -> list[dict[str, Any]]:
    """One message's rows: a ``UsageRecorded`` object, or a JSON array of them (a publisher may batch;
    each event still carries its own id). Unreadable events of an array are dropped, the rest kept."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidUsageEventError(f"not JSON: {exc}") from exc
    if not isinstance(data, list):
        return [_row(data, None)]
    rows = []
    for item in data:
        try:
            rows.append(_row(item, None))
        except InvalidUsageEventError as exc:
            log.error("dropping an unreadable usage event of a batch: %s", exc)
    if not rows:
        raise InvalidUsageEventError("no readable usage event in the batch")
    return rows


def _row(data: Any, latest: str | None) -> dict[str, Any]:
    """``latest``: the latest ``occurred_at`` accepted (None: now's, ``_LATEST``)."""
    # Hot path (one call per usage event): an event within every bound is read by ``_fast_row``; any other
    # is read again by ``_checked_row``, which says what is wrong with it.
    try:
        row = _fast_row(data, latest)
    except (KeyError, TypeError, ValueError, AttributeError):  # a field missing or odd: named below
        row = None
    return _checked_row(data, latest) if row is None else row


_MAX_TEXT = bounds.MAX_TEXT_LENGTH
_MAX_TOKENS = bounds.MAX_TOKENS
_MIN_STATUS = bounds.MIN_STATUS_CODE
_MAX_STATUS = bounds.MAX_STATUS_CODE
_MAX_LATENCY = bounds.MAX_LATENCY_MS
_NUMBER = (int, float)

_Text = Annotated[str, msgspec.Meta(max_length=_MAX_TEXT)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_TOKENS)]
# An int stays an int, a float a float, as orjson reads them (the rows are then the same, types and all).
_Millis = (
    Annotated[int, msgspec.Meta(ge=0, le=int(_MAX_LATENCY))]
    | Annotated[float, msgspec.Meta(ge=0.0, le=_MAX_LATENCY)]
)


class _Event(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A ``UsageRecorded`` within every bound ``_fast_row`` checks, as msgspec reads it (``_message_rows``).

    Only ever narrower than ``_fast_row``: ints refuse floats and booleans, ``schema_version`` is exactly
    ``1``, optional texts are a string or null, ``streamed``/``cut_short`` a boolean or null; anything else
    goes the old way, which says what is wrong. Unknown fields are refused (msgspec skips their values
    without the checks orjson makes, e.g. UTF-8 and a number's range): keep the fields those of
    ``UsageRecorded`` (``test_accounting_domain`` compares them)."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_TEXT)]
    token_id: _Text
    user_id: _Text
    org_id: _Text
    endpoint: _Text
    model: _Text
    route: _Text
    status_code: Annotated[int, msgspec.Meta(ge=_MIN_STATUS, le=_MAX_STATUS)]
    occurred_at: str
    schema_version: Literal[1] = 1
    kind: Literal["model", "mcp", "batch"] = "model"
    service_account_id: _Text | None = None
    team_id: _Text | None = None
    tool: _Text | None = None
    batch_id: _Text | None = None
    request_id: _Text | None = None
    alias: _Text | None = None
    input_tokens: _Count = 0
    output_tokens: _Count = 0
    cached_tokens: _Count = 0
    cache_write_5m_tokens: _Count = 0
    cache_write_1h_tokens: _Count = 0
    reasoning_tokens: _Count = 0
    latency_ms: _Millis = 0.0
    ttft_ms: _Millis | None = None
    streamed: bool | None = None
    cut_short: bool | None = None


_decode_message = msgspec.json.Decoder(list[_Event] | _Event).decode


def _message_rows(
    payload: bytes, latest: str | None, cost: Callable[[dict[str, Any]], int] | None
) -> list[dict[str, Any]] | None:
    """The priced rows of a message whose every event is good, read by msgspec (half the time of orjson
    and ``_fast_row``), each the row ``_priced_row`` makes; None for any other message (refused by msgspec,
    an empty array, one event out of bounds), which ``usage_message_from_json`` then reads the old way."""
    try:
        decoded = _decode_message(payload)
    # msgspec.DecodeError (ValidationError is one), UnicodeDecodeError, a payload that is not bytes
    except (ValueError, TypeError):
        return None
    events = decoded if type(decoded) is list else (decoded,)
    if not events:
        return None
    rows = []
    for event in events:
        try:
            occurred = _occurred_at(event.occurred_at)
        except ValueError:
            return None
        if not _EARLIEST <= occurred or not (
            _LATEST.admits(occurred) if latest is None else occurred <= latest
        ):
            return None
        row = {
            "event_id": event.event_id,
            "token_id": event.token_id,
            "user_id": event.user_id,
            "org_id": event.org_id,
            "endpoint": event.endpoint,
            "model": event.model,
            "route": event.route,
            "service_account_id": event.service_account_id or "",
            "team_id": event.team_id or "",
            "tool": event.tool or "",
            "batch_id": event.batch_id or "",
            "request_id": event.request_id or "",
            "alias": event.alias or "",
            "status_code": event.status_code,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cached_tokens": event.cached_tokens,
            "cache_write_5m_tokens": event.cache_write_5m_tokens,
            "cache_write_1h_tokens": event.cache_write_1h_tokens,
            "reasoning_tokens": event.reasoning_tokens,
            "kind": event.kind,
            "latency_ms": event.latency_ms,
            "ttft_ms": event.ttft_ms,
            "streamed": event.streamed is True,
            "cut_short": event.cut_short is True,
            "occurred_at": occurred,
        }
        if cost is not None:
            nanos = cost(row)
            if not 0 <= nanos <= bounds.MAX_EVENT_COST_NANOS:
                return None
            row["cost_nanos"] = nanos
        rows.append(row)
    return rows


def _fast_row(data: Any, latest: str | None) -> dict[str, Any] | None:
    """The row ``_checked_row`` makes of an event within every bound, or None if the event may not be:
    the same checks, field by field without loops over names or module lookups (about a third less time
    an event). Keep the two in step (``test_accounting_domain`` compares them)."""
    if type(data) is not dict:
        return None
    get = data.get
    if get("schema_version", 1) != 1:
        return None
    event_id = data["event_id"]
    texts = (
        event_id,
        data["token_id"],
        data["user_id"],
        data["org_id"],
        data["endpoint"],
        data["model"],
        data["route"],
        get("service_account_id") or "",
        get("team_id") or "",
        get("tool") or "",
        get("batch_id") or "",
        get("request_id") or "",
        get("alias") or "",
    )
    for text in texts:
        if type(text) is not str or len(text) > _MAX_TEXT:
            return None
    if not event_id:
        return None
    counts = (
        get("input_tokens", 0),
        get("output_tokens", 0),
        get("cached_tokens", 0),
        get("cache_write_5m_tokens", 0),
        get("cache_write_1h_tokens", 0),
        get("reasoning_tokens", 0),
    )
    for count in counts:
        if type(count) is not int or not 0 <= count <= _MAX_TOKENS:
            return None
    status = data["status_code"]
    if type(status) is not int or not _MIN_STATUS <= status <= _MAX_STATUS:
        return None
    kind = get("kind", "model")
    latency = get("latency_ms", 0.0)
    ttft = get("ttft_ms")
    if kind not in _KINDS or type(latency) not in _NUMBER or not 0 <= latency <= _MAX_LATENCY:
        return None
    if ttft is not None and (type(ttft) not in _NUMBER or not 0 <= ttft <= _MAX_LATENCY):
        return None
    occurred = _occurred_at(data["occurred_at"])
    if not _EARLIEST <= occurred or not (_LATEST.admits(occurred) if latest is None else occurred <= latest):
        return None
    return {
        "event_id": event_id,
        "token_id": texts[1],
        "user_id": texts[2],
        "org_id": texts[3],
        "endpoint": texts[4],
        "model": texts[5],
        "route": texts[6],
        "service_account_id": texts[7],
        "team_id": texts[8],
        "tool": texts[9],
        "batch_id": texts[10],
        "request_id": texts[11],
        "alias": texts[12],
        "status_code": status,
        "input_tokens": counts[0],
        "output_tokens": counts[1],
        "cached_tokens": counts[2],
        "cache_write_5m_tokens": counts[3],
        "cache_write_1h_tokens": counts[4],
        "reasoning_tokens": counts[5],
        "kind": kind,
        "latency_ms": latency,
        "ttft_ms": ttft,
        "streamed": get("streamed") is True,
        "cut_short": get("cut_short") is True,
        "occurred_at": occurred,
    }


def _checked_row(data: Any, latest: str | None) -> dict[str, Any]:
    """``_row``, with a reason for every refusal (``InvalidUsageEventError``)."""
    # Plain lookups first, then exact type checks in one pass.
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
        raise InvalidUsageEventError(f"not a usage event: {_why_unreadable(data, exc)}") from exc
    for name in _TEXT:
        if type(row[name]) is not str:
            raise InvalidUsageEventError(f"{name} must be a string")
        if len(row[name]) > bounds.MAX_TEXT_LENGTH:
            raise InvalidUsageEventError(f"{name} is longer than {bounds.MAX_TEXT_LENGTH} characters")
    if not row["event_id"]:
        raise InvalidUsageEventError("event_id must not be empty")
    for name in _COUNTS:
        if type(row[name]) is not int:
            raise InvalidUsageEventError(f"{name} must be an integer")
        if not 0 <= row[name] <= bounds.MAX_TOKENS:
            raise InvalidUsageEventError(f"{name} {row[name]} is outside 0..{bounds.MAX_TOKENS}")
    status = row["status_code"]
    if type(status) is not int:
        raise InvalidUsageEventError("status_code must be an integer")
    if not bounds.MIN_STATUS_CODE <= status <= bounds.MAX_STATUS_CODE:
        raise InvalidUsageEventError(
            f"status_code {status} is outside {bounds.MIN_STATUS_CODE}..{bounds.MAX_STATUS_CODE}"
        )
    occurred = row["occurred_at"]
    if not _EARLIEST <= occurred or not (_LATEST.admits(occurred) if latest is None else occurred <= latest):
        raise InvalidUsageEventError(
            f"occurred_at {data['occurred_at']} is outside {_EARLIEST} .. now + skew"
        )
    if type(row["kind"]) is not str or row["kind"] not in _KINDS:  # a list or an object is not hashable
        raise InvalidUsageEventError("kind must be model, mcp or batch")
    latency, ttft = row["latency_ms"], row["ttft_ms"]
    if type(latency) not in (int, float) or type(ttft) not in (int, float, type(None)):
        raise InvalidUsageEventError("latency_ms and ttft_ms must be numbers")
    if not 0 <= latency <= bounds.MAX_LATENCY_MS or (
        ttft is not None and not 0 <= ttft <= bounds.MAX_LATENCY_MS
    ):
        raise InvalidUsageEventError(f"latency_ms and ttft_ms must be within 0..{bounds.MAX_LATENCY_MS:.0f}")
    return row


def _why_unreadable(data: Any, exc: Exception) -> str:
    """The reason an Admin reads on a dead letter: a sentence, not ``KeyError('token_id')``."""
    if not isinstance(data, dict):
        return f"a JSON object was expected, not {type(data).__name__}"
    if isinstance(exc, KeyError):
        return f"the field {exc.args[0]} is missing"
    try:
        _occurred_at(data["occurred_at"])
    except (TypeError, ValueError):
        return f"occurred_at {data['occurred_at']!r} is not an ISO 8601 time such as 2026-12-05T14:00:00Z"
    return str(exc) or type(exc).__name__


def token_classes(row: dict[str, Any]) -> TokenClasses:
    """A row's token counts by class, as the cost rule takes them."""
    return TokenClasses(
        row["input_tokens"],
        row["output_tokens"],
        row["cached_tokens"],
        row["cache_write_5m_tokens"],
        row["cache_write_1h_tokens"],
        row["reasoning_tokens"],
    )


def row_cost(prices: PriceBook, row: dict[str, Any]) -> int:
    """``prices.cost(row["model"], token_classes(row))``, without a ``TokenClasses`` (every stored event
    is priced: a sixth of the time reading one takes)."""
    price = prices.price_for(row["model"])
    if price is None:
        return 0
    return price.cost_of(
        row["input_tokens"],
        row["output_tokens"],
        row["cached_tokens"],
        row["cache_write_5m_tokens"],
        row["cache_write_1h_tokens"],
        row["reasoning_tokens"],
    )
