"""Use cases of the Admin pages: the catalogue, orgs with limits, budgets and exclusions, users, terms,
MCP servers; and the audit view (events by actor, object and time; an object's state at a moment)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aqueduct_ui.adapters.api import ApiError, UserApi, items

__all__ = ["AdminPage", "AuditPage", "load_admin_page", "load_audit_page"]


@dataclass(frozen=True)
class AdminPage:
    orgs: list[dict[str, Any]]
    users: list[dict[str, Any]]  # the newest ADMIN_USERS_SHOWN; every user is on the paged Users page
    endpoints: list[dict[str, Any]]
    models: list[dict[str, Any]]
    teams: list[dict[str, Any]]
    terms: dict[str, Any] | None
    mcp_servers: list[dict[str, Any]]
    org_names: dict[str, str]
    users_total: int = 0


# At the size of a university the Admin page shows the newest users only and links to the Users page
# (search, sort, pages) for the rest.
ADMIN_USERS_SHOWN = 20


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
        api.directory.get_page("/api/users", sort="created_at", order="desc", limit=ADMIN_USERS_SHOWN),
        api.directory.get("/api/teams", brief="true"),  # names for the MCP servers' team picker
        api.directory.get("/api/endpoints"),
        api.directory.get("/api/models", all="true"),
        _optional(api, "/api/mcp-servers", "mcp_servers"),
    )
    orgs = items(orgs_answer, "orgs")
    users_page, users_total = users_answer
    users = [u for u in users_page if not u.get("deleted")]
    teams = [t for t in items(teams_answer, "teams") if not t.get("deleted")]
    return AdminPage(
        orgs=orgs,
        users=users,
        users_total=users_total,
        endpoints=sorted(items(endpoints, "endpoints"), key=lambda e: e["slug"]),
        models=sorted(items(models, "models"), key=lambda m: m["name"]),
        teams=sorted(teams, key=lambda t: t.get("name", "").lower()),
        terms=terms,
        mcp_servers=mcp_servers,
        org_names={o["id"]: o.get("name", o["id"]) for o in orgs},
    )


AUDIT_PAGE_SIZE = 50
KINDS = ("Org", "Team", "User", "Token", "ServiceAccount", "Endpoint", "Model", "McpServer", "TermsOfService")


@dataclass(frozen=True)
class AuditPage:
    events: list[dict[str, Any]]  # newest first, each with actor_name, aggregate_name and changes
    filters: dict[str, str]
    page: int
    total: int
    state: dict[str, Any] | None
    state_json: str
    state_error: str | None
    kinds: tuple[str, ...] = KINDS

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // AUDIT_PAGE_SIZE))


async def _actor_id(api: UserApi, actor: str | None) -> str | None:
    """An actor typed as an email is looked up; an id (or "system") is taken as it is."""
    if not actor or "@" not in actor:
        return actor or None
    found = items(await api.directory.get("/api/users", q=actor, include_deactivated="true"), "users")
    exact = [u for u in found if (u.get("email") or "").lower() == actor.lower()]
    return exact[0]["id"] if exact else "no-such-user"


async def load_audit_page(
    api: UserApi,
    actor: str | None,
    aggregate_id: str | None,
    since: datetime | None,
    until: datetime | None,
    at: datetime | None,
    state_id: str | None,
    kind: str | None = None,
    event_type: str | None = None,
    page: int = 1,
) -> AuditPage:
    page = max(1, page)
    events, total = await api.directory.get_page(
        "/api/audit/events",
        actor=await _actor_id(api, actor),
        aggregate_id=aggregate_id or None,
        aggregate_type=kind if kind in KINDS else None,
        type=event_type or None,
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
        order="desc",
        limit=AUDIT_PAGE_SIZE,
        offset=(page - 1) * AUDIT_PAGE_SIZE,
        changes="true",
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
    return AuditPage(
        events=events,
        filters={
            "actor": actor or "",
            "aggregate_id": aggregate_id or "",
            "kind": kind or "",
            "type": event_type or "",
            "since": since.strftime("%Y-%m-%dT%H:%M") if since else "",
            "until": until.strftime("%Y-%m-%dT%H:%M") if until else "",
            "at": at.strftime("%Y-%m-%dT%H:%M:%S") if at else "",
            "state_id": state_id or "",
        },
        page=page,
        total=total,
        state=state,
        state_json=json.dumps((state or {}).get("state", state), indent=2, sort_keys=True) if state else "",
        state_error=state_error,
    )
