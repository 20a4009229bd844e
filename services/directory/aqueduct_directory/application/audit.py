"""Audit: the event log with actors, and any past state rebuilt by folding events up to a moment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aqueduct_directory.application.audit_index import AuditQuery
from aqueduct_directory.application.base import DirectoryCore, fold_events
from aqueduct_directory.application.translate import to_integration_event, to_plain
from aqueduct_directory.application.views import view_of
from aqueduct_directory.domain.errors import NotFoundError
from aqueduct_directory.domain.grants import effective_team, token_grant
from aqueduct_directory.domain.policy import Principal
from aqueduct_directory.domain.values import as_utc

__all__ = ["audit_events", "model_access_at", "state_at"]


def audit_events(
    app: DirectoryCore,
    p: Principal,
    aggregate_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    offset: int = 0,
    newest_first: bool = False,
    event_type: str | None = None,
    aggregate_type: str | None = None,
    with_changes: bool = False,
    before_id: int | None = None,
    after_id: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The events that match, one page of them, and how many match in all.

    The audit index picks the page; only its events are read from the store. ``before_id`` and
    ``after_id`` (notification ids) page by cursor: stable while new events arrive, unlike an offset."""
    p.require_admin("read the audit log")
    since, until = (as_utc(t) if t is not None else None for t in (since, until))
    query = AuditQuery(aggregate_id, actor, event_type, aggregate_type, since, until, after_id, before_id)
    ids, total = app.audit.select(query, offset, limit, newest_first)
    stored = app.stored_events(ids)
    answer = []
    for notification_id in ids:
        domain_event = stored[notification_id]
        event = to_integration_event(domain_event, notification_id).model_dump(mode="json")
        if with_changes:
            event["actor_name"] = _name_of(app, event["actor"])
            event["aggregate_name"] = _name_of(app, event["aggregate_id"])
            event["changes"] = _changes(app, domain_event, event["data"])
        answer.append(event)
    return answer, total


def _name_of(app: DirectoryCore, object_id: str) -> str | None:
    """What people call an object now: a user's name, an org's or team's name, a token's name."""
    if object_id == "system":
        return "system"
    found = app.state.aggregates.get(object_id)
    if found is None:
        return None
    for attribute in ("name", "email", "slug", "version"):
        value = getattr(found, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _changes(app: DirectoryCore, domain_event: Any, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each field the event sets, with the object's value just before it (None for a new object or a
    field the object did not have): the audit page shows them as "before → after"."""
    version = domain_event.originator_version
    before_state: Any = None
    if version > 1:
        try:
            before_state = app.repository.get(domain_event.originator_id, version=version - 1)
        except Exception:  # an object the store cannot fold back (never expected): no "before" shown
            before_state = None
    changes = []
    for field, after in data.items():
        before = getattr(before_state, field, None) if before_state is not None else None
        before = to_plain(before)
        if before != after:
            changes.append({"field": field, "before": before, "after": after})
    return changes


def state_at(app: DirectoryCore, p: Principal, time: datetime, aggregate_id: str) -> dict[str, Any]:
    p.require_admin("read past states")
    time = as_utc(time)
    state = fold_events(app.iter_events(), until=time)
    aggregate = state.aggregates.get(aggregate_id)
    if aggregate is None:
        raise NotFoundError(f"{aggregate_id!r} did not exist at {time.isoformat()}", "not_found_at_time")
    return {"time": time.isoformat(), "notification_id": state.position, "state": view_of(aggregate, state)}


def model_access_at(app: DirectoryCore, p: Principal, model: str, time: datetime) -> list[dict[str, Any]]:
    """Which tokens could call ``model`` at ``time``, and under which limits."""
    p.require_admin("read past access")
    time = as_utc(time)
    state = fold_events(app.iter_events(), until=time)
    known = state.models.get(model)
    if known is None or known.deleted:
        return []
    answer = []
    for token in state.tokens.values():
        if not token.is_live(time):
            continue
        grant = token_grant(state, token)
        if grant is None or (grant.allowed_models is not None and model not in grant.allowed_models):
            continue
        team = effective_team(state, token)
        answer.append(
            {
                "token_id": grant.token_id,
                "name": grant.name,
                "user_id": grant.user_id,
                "service_account_id": grant.service_account_id,
                "team_id": str(team.id) if team else None,
                "org_id": grant.org_id,
                "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
                "limits": grant.limits.model_dump(),
                "model_limits": grant.model_limits[model].model_dump()
                if model in grant.model_limits
                else None,
            }
        )
    return sorted(answer, key=lambda a: a["token_id"])
