"""Stored domain events -> the public ``DirectoryEvent`` contract (kept apart on purpose)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from aqueduct_libs.events import DirectoryEvent

__all__ = ["to_integration_event", "to_plain"]

# Bookkeeping of the event-sourcing library, not facts about the directory.
_INTERNAL = {"originator_id", "originator_version", "originator_topic", "timestamp", "actor"}


def to_plain(value: Any) -> Any:
    """A value as it appears in an event's JSON (ids, times and amounts as strings)."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    return value


def to_integration_event(domain_event: Any, notification_id: int) -> DirectoryEvent:
    """Token values are never in a stored event, so nothing secret can leak through here."""
    fields = vars(domain_event)
    return DirectoryEvent(
        notification_id=notification_id,
        type=type(domain_event).__name__,
        aggregate_type=type(domain_event).__qualname__.split(".")[0],
        aggregate_id=str(domain_event.originator_id),
        aggregate_version=domain_event.originator_version,
        actor=fields.get("actor", "system"),
        occurred_at=domain_event.timestamp,
        data={k: to_plain(v) for k, v in fields.items() if k not in _INTERNAL and not k.startswith("_")},
    )
