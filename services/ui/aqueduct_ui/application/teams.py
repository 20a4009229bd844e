"""Use cases of the teams pages: the org's teams and defaults, one team's limits, accounts and members."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aqueduct_ui.adapters.api import UserApi, items, q
from aqueduct_ui.domain.viewer import Viewer, role_tag

__all__ = [
    "MemberRow",
    "ServiceAccountRow",
    "TeamPage",
    "TeamsPage",
    "load_team_page",
    "load_teams_page",
]


TEAMS_PAGE_SIZE = 100


@dataclass(frozen=True)
class TeamsPage:
    org: dict[str, Any]
    orgs: list[dict[str, Any]]  # the orgs an Admin may switch between; empty for everyone else
    teams: list[dict[str, Any]]  # one page, by name
    can_manage: bool
    search: str = ""
    page: int = 1
    total: int = 0

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // TEAMS_PAGE_SIZE))


async def load_teams_page(
    api: UserApi, viewer: Viewer, org_id: str | None, search: str = "", page: int = 1
) -> TeamsPage:
    orgs = items(await api.directory.get("/api/orgs"), "orgs") if viewer.admin else []
    chosen = org_id or viewer.org_id or (orgs[0]["id"] if orgs else None)
    if chosen is None:
        return TeamsPage(org={}, orgs=orgs, teams=[], can_manage=False)
    page = max(1, page)
    # Brief rows (a member count, no member list), one page, searched and sorted by the directory.
    org, (teams, total) = await asyncio.gather(
        api.directory.get(f"/api/orgs/{q(chosen)}"),
        api.directory.get_page(
            "/api/teams",
            org_id=chosen,
            brief="true",
            q=search.strip() or None,
            sort="name",
            limit=TEAMS_PAGE_SIZE,
            offset=(page - 1) * TEAMS_PAGE_SIZE,
        ),
    )
    for team in teams:
        team["is_member"] = team["id"] in viewer.teams
    return TeamsPage(
        org=org,
        orgs=orgs,
        teams=teams,
        can_manage=viewer.manages_org(chosen),
        search=search,
        page=page,
        total=total,
    )


@dataclass(frozen=True)
class ServiceAccountRow:
    id: str
    name: str
    description: str
    owner_user_id: str
    owner_name: str
    token_id: str | None
    token_preview: str
    token_limits: dict[str, Any] = field(default_factory=dict)  # the token's own limits (Admins set them)


@dataclass(frozen=True)
class MemberRow:
    user_id: str
    name: str
    email: str
    tag: str
    team_admin: bool
    owns: list[str] = field(default_factory=list)  # names of the service accounts they own


@dataclass(frozen=True)
class TeamPage:
    team: dict[str, Any]
    org: dict[str, Any]
    service_accounts: list[ServiceAccountRow]
    members: list[MemberRow]
    candidates: list[dict[str, Any]]  # org users who are not members yet (found by ``find``, at most 50)
    is_member: bool
    can_admin: bool  # Team-Admin of this team (or above): accounts and members
    can_edit_team: bool  # Org-Admin (or Admin): name, description, excluded models, and no bound
    can_set_limits: bool  # Team-Admin (or above): limits, per-model limits, budgets (up to the org's)
    can_set_token_limits: bool = False  # Admin: a service account token's own limits
    models: list[str] = field(default_factory=list)  # the catalogue, for the exclusion picker
    find: str = ""  # what the candidates were searched by

    @property
    def limit_models(self) -> list[str]:
        """Rows of the per-model limits form: the catalogue and any model the team still limits."""
        return sorted(set(self.models) | set(self.team.get("model_limits") or {}))


CANDIDATES_SHOWN = 50


async def load_team_page(api: UserApi, viewer: Viewer, team_id: str, find: str = "") -> TeamPage:
    """``find``: text to search the org's users by, for the "add members" picker (at most 50 shown)."""
    team = await api.directory.get(f"/api/teams/{q(team_id)}")
    org_id = team.get("org_id")
    members_raw = team.get("members", [])
    member_ids = {m["user_id"] for m in members_raw}
    is_member = viewer.user_id in member_ids
    can_admin = viewer.manages_team(team_id, org_id)
    sees_accounts = is_member or can_admin
    org, users_answer, accounts_answer, tokens_answer, models_answer = await asyncio.gather(
        api.directory.get(f"/api/orgs/{q(org_id)}") if org_id else asyncio.sleep(0, {}),
        # Only the users a Team-Admin may add, found by name or email: never the whole org.
        api.directory.get(
            "/api/users",
            org_id=org_id,
            q=find.strip() or None,
            sort="name",
            limit=CANDIDATES_SHOWN + len(member_ids),
        )
        if can_admin
        else asyncio.sleep(0, []),
        api.directory.get(f"/api/teams/{q(team_id)}/service-accounts")
        if sees_accounts
        else asyncio.sleep(0, []),
        api.directory.get("/api/tokens") if sees_accounts else asyncio.sleep(0, []),
        api.directory.get("/api/models", all="true"),
    )
    found = [u for u in items(users_answer, "users") if u["id"] not in member_ids and not u.get("deleted")]
    users: dict[str, dict[str, Any]] = {}
    accounts = [sa for sa in items(accounts_answer, "service_accounts") if not sa.get("deleted")]
    previews = {t["id"]: t.get("preview", "") for t in items(tokens_answer, "tokens")}
    token_limits = {t["id"]: t.get("limits") or {} for t in items(tokens_answer, "tokens")}

    # Names come with the members (the directory shows teammates by name and email).
    for m in members_raw:
        if m.get("name") or m.get("email"):
            users[m["user_id"]] = {
                "id": m["user_id"],
                "name": m.get("name"),
                "email": m.get("email", ""),
                "org_admin": m.get("org_admin"),
                "admin": m.get("admin"),
            }

    def name_of(user_id: str) -> str:
        user = users.get(user_id)
        if user:
            return str(user.get("name") or user.get("email") or user_id)
        return "you" if user_id == viewer.user_id else f"member {user_id[:8]}"

    sa_rows = [
        ServiceAccountRow(
            id=sa["id"],
            name=sa.get("name", ""),
            description=sa.get("description", ""),
            owner_user_id=sa.get("owner_user_id", ""),
            owner_name=sa.get("owner_name") or name_of(sa.get("owner_user_id", "")),
            token_id=sa.get("token_id"),
            token_preview=previews.get(sa.get("token_id") or "", ""),
            token_limits=token_limits.get(sa.get("token_id") or "", {}),
        )
        for sa in sorted(accounts, key=lambda s: s.get("name", "").lower())
    ]
    members = []
    for m in members_raw:
        user = users.get(m["user_id"]) or (
            {"name": viewer.name, "email": viewer.email} if m["user_id"] == viewer.user_id else {}
        )
        members.append(
            MemberRow(
                user_id=m["user_id"],
                name=str(user.get("name") or name_of(m["user_id"])),
                email=str(user.get("email") or ""),
                tag=role_tag({**user, "team_admin": m.get("team_admin")}),
                team_admin=bool(m.get("team_admin")),
                owns=[sa.name for sa in sa_rows if sa.owner_user_id == m["user_id"]],
            )
        )
    members.sort(key=lambda r: r.name.lower())
    candidates = found[:CANDIDATES_SHOWN]
    return TeamPage(
        team=team,
        org=org,
        service_accounts=sa_rows,
        members=members,
        candidates=candidates if can_admin else [],
        is_member=is_member,
        can_admin=can_admin,
        can_edit_team=viewer.manages_org(org_id),
        can_set_limits=can_admin,
        can_set_token_limits=viewer.admin,
        models=sorted(m["name"] for m in items(models_answer, "models") if not m.get("deleted")),
        find=find,
    )
