"""Use cases of the users pages: the org's users and their rate limits over the org's defaults; one
user's budgets, excluded models, per-model limits and tokens."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aqueduct_ui.adapters.api import UserApi, items, q
from aqueduct_ui.domain.viewer import Viewer

__all__ = ["PAGE_SIZE", "UserPage", "UsersPage", "load_user_page", "load_users_page"]

PAGE_SIZE = 25


@dataclass(frozen=True)
class UsersPage:
    org: dict[str, Any]
    orgs: list[dict[str, Any]]  # the orgs an Admin may switch between; empty for everyone else
    users: list[dict[str, Any]]  # one page of the org's users for its Org-Admins, else only the viewer
    can_edit: bool  # Org-Admin of this org (or Admin): may change the users' limits
    search: str = ""
    page: int = 1
    total: int = 0
    show_deactivated: bool = False

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // PAGE_SIZE))


async def load_users_page(
    api: UserApi,
    viewer: Viewer,
    org_id: str | None,
    search: str = "",
    page: int = 1,
    show_deactivated: bool = False,
) -> UsersPage:
    orgs = items(await api.directory.get("/api/orgs"), "orgs") if viewer.admin else []
    chosen = org_id if viewer.admin and org_id else viewer.org_id or (orgs[0]["id"] if orgs else None)
    if chosen is None:
        return UsersPage(org={}, orgs=orgs, users=[], can_edit=False)
    org = await api.directory.get(f"/api/orgs/{q(chosen)}")
    can_edit = viewer.manages_org(chosen)
    page = max(1, page)
    if can_edit:
        users, total = await api.directory.get_page(
            "/api/users",
            org_id=chosen,
            q=search.strip() or None,
            sort="name",
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
            include_deactivated="true" if show_deactivated else None,
        )
    else:
        # Everyone else sees their own limits only (the directory shows a user's limits to that user
        # and to the Org-Admins of their org).
        users, total = [await api.directory.get("/api/me")], 1
    return UsersPage(
        org=org,
        orgs=orgs,
        users=users,
        can_edit=can_edit,
        search=search,
        page=page,
        total=total,
        show_deactivated=show_deactivated,
    )


@dataclass(frozen=True)
class UserPage:
    """One user's budgets, excluded models, per-model limits and (for Admins) their tokens' limits."""

    user: dict[str, Any]
    org: dict[str, Any]
    models: list[str]  # the catalogue, for the exclusion picker and the per-model rows
    tokens: list[dict[str, Any]]  # the user's personal tokens; only Admins may set their limits
    can_edit: bool  # Org-Admin of the user's org (or Admin), and the user is no Admin unless the viewer is
    can_set_token_limits: bool  # Admin
    can_grant_admin: bool = False  # Admin
    local_username: str | None = None  # the user's local account, when they sign in with one

    @property
    def active(self) -> bool:
        return not self.user.get("deleted")

    @property
    def limit_models(self) -> list[str]:
        return sorted(set(self.models) | set(self.user.get("model_limits") or {}))


async def load_user_page(api: UserApi, viewer: Viewer, user_id: str) -> UserPage:
    user = await api.directory.get(f"/api/users/{q(user_id)}")
    org_id = user.get("org_id")
    org, models = await asyncio.gather(
        api.directory.get(f"/api/orgs/{q(org_id)}") if org_id else asyncio.sleep(0, {}),
        api.directory.get("/api/models", all="true"),
    )
    tokens = items(await api.directory.get("/api/tokens", user_id=user_id), "tokens") if viewer.admin else []
    return UserPage(
        user=user,
        org=org,
        models=sorted(m["name"] for m in items(models, "models") if not m.get("deleted")),
        tokens=[t for t in tokens if not t.get("revoked")],
        can_edit=viewer.manages_org(org_id) and (viewer.admin or not user.get("admin")),
        can_set_token_limits=viewer.admin,
        can_grant_admin=viewer.admin,
        local_username=subject.removeprefix("local:")
        if (subject := user.get("subject") or "").startswith("local:")
        else None,
    )
