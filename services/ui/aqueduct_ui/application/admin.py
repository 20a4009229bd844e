"""Use cases of the Admin pages: the catalogue, orgs with limits, budgets and exclusions, users, terms,
MCP servers; and the audit view (events by actor, object and time; an object's state at a moment)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aqueduct_ui.adapters.api import ApiError, UserApi, items

__all__ = ["AdminPage", "AuditPage", "load_admin_page", "load_audit_page"]


@dataclass(frozen=True)
class AdminPage:
    orgs: list[dict[str, Any]]
    users: list[dict[str, Any]]
    endpoints: list[dict[str, Any]]
    models: list[dict[str, Any]]
    teams: list[dict[str, Any]]
    terms: dict[str, Any] | None
    mcp_servers: list[dict[str, Any]]
    org_names: dict[str, str]


async def _optional(api: UserApi, path: str, key: str) -> list[dict[str, Any]]:
    """Sections whose API is missing in this deployment show as empty rather than failing the page."""
    try:
        return items(await api.directory.get(path), key)
    except ApiError as exc:
        if exc.status in (404, 405):
            return []
        raise


async def _terms(api: UserApi) -> dict[str, Any] | None:
    try:
        return await api.directory.get("/api/terms") or None
    except ApiError as exc:
        if exc.status != 404:
            raise
        return None


async def load_admin_page(api: UserApi) -> AdminPage:
    orgs_answer, terms, users_answer, teams_answer, endpoints, models, mcp_servers = await asyncio.gather(
        api.directory.get("/api/orgs"),
        _terms(api),
        api.directory.get("/api/users"),
        api.directory.get("/api/teams"),
        api.directory.get("/api/endpoints"),
        api.directory.get("/api/models", all="true"),
        _optional(api, "/api/mcp-servers", "mcp_servers"),
    )
    orgs = items(orgs_answer, "orgs")
    users = [u for u in items(users_answer, "users") if not u.get("deleted")]
    teams = [t for t in items(teams_answer, "teams") if not t.get("deleted")]
    return AdminPage(
        orgs=orgs,
        users=sorted(users, key=lambda u: (u.get("name") or u.get("email") or "").lower()),
        endpoints=sorted(items(endpoints, "endpoints"), key=lambda e: e["slug"]),
        models=sorted(items(models, "models"), key=lambda m: m["name"]),
        teams=sorted(teams, key=lambda t: t.get("name", "").lower()),
        terms=terms,
        mcp_servers=mcp_servers,
        org_names={o["id"]: o.get("name", o["id"]) for o in orgs},
    )


@dataclass(frozen=True)
class AuditPage:
    events: list[dict[str, Any]]
    names: dict[str, str]  # actor / object id -> a readable name
    filters: dict[str, str]
    limit: int
    state: dict[str, Any] | None
    state_json: str
    state_error: str | None


async def _names(api: UserApi) -> dict[str, str]:
    sources = (
        ("/api/users", "users", lambda o: o.get("name") or o.get("email")),
        ("/api/orgs", "orgs", lambda o: f"org {o.get('name')}"),
        ("/api/teams", "teams", lambda o: f"team {o.get('name')}"),
        ("/api/tokens", "tokens", lambda o: f"token {o.get('name')}"),
    )
    answers = await asyncio.gather(*(api.directory.get(path) for path, _, _ in sources))
    names: dict[str, str] = {"system": "system"}
    for (_, key, label), answer in zip(sources, answers, strict=True):
        for obj in items(answer, key):
            names[obj["id"]] = str(label(obj) or obj["id"])
    return names


async def load_audit_page(
    api: UserApi,
    actor: str | None,
    aggregate_id: str | None,
    since: datetime | None,
    until: datetime | None,
    at: datetime | None,
    state_id: str | None,
    limit: int = 500,
) -> AuditPage:
    since = since or datetime.now(UTC) - timedelta(days=7)
    events = await api.directory.get(
        "/api/audit/events",
        actor=actor or None,
        aggregate_id=aggregate_id or None,
        since=since.isoformat(),
        until=until.isoformat() if until else None,
        limit=limit,
    )
    state: dict[str, Any] | None = None
    state_error: str | None = None
    if state_id and at:
        try:
            state = await api.directory.get("/api/audit/at", time=at.isoformat(), aggregate_id=state_id)
        except ApiError as exc:
            if exc.status not in (400, 404, 422):
                raise
            state_error = exc.detail
    listed = list(reversed(items(events, "events")))  # newest first
    return AuditPage(
        events=listed,
        names=await _names(api),
        filters={
            "actor": actor or "",
            "aggregate_id": aggregate_id or "",
            "since": since.strftime("%Y-%m-%dT%H:%M"),
            "until": until.strftime("%Y-%m-%dT%H:%M") if until else "",
            "at": at.strftime("%Y-%m-%dT%H:%M:%S") if at else "",
            "state_id": state_id or "",
        },
        limit=limit,
        state=state,
        state_json=json.dumps((state or {}).get("state", state), indent=2, sort_keys=True) if state else "",
        state_error=state_error,
    )
