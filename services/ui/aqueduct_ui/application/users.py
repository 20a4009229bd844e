"""Use case of the users page: the org's users and their own rate limits over the org's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aqueduct_ui.adapters.api import UserApi, items, q
from aqueduct_ui.domain.viewer import Viewer

__all__ = ["UsersPage", "load_users_page"]


@dataclass(frozen=True)
class UsersPage:
    org: dict[str, Any]
    orgs: list[dict[str, Any]]  # the orgs an Admin may switch between; empty for everyone else
    users: list[dict[str, Any]]  # everyone of the org for its Org-Admins, else only the viewer
    can_edit: bool  # Org-Admin of this org (or Admin): may change the users' limits


async def load_users_page(api: UserApi, viewer: Viewer, org_id: str | None) -> UsersPage:
    orgs = items(await api.directory.get("/api/orgs"), "orgs") if viewer.admin else []
    chosen = org_id if viewer.admin and org_id else viewer.org_id or (orgs[0]["id"] if orgs else None)
    if chosen is None:
        return UsersPage(org={}, orgs=orgs, users=[], can_edit=False)
    org = await api.directory.get(f"/api/orgs/{q(chosen)}")
    can_edit = viewer.manages_org(chosen)
    if can_edit:
        listed = items(await api.directory.get("/api/users", org_id=chosen), "users")
        users = [u for u in listed if not u.get("deleted") and u.get("org_id") == chosen]
    else:
        # Everyone else sees their own limits only (the directory shows a user's limits to that user
        # and to the Org-Admins of their org).
        users = [await api.directory.get("/api/me")]
    users.sort(key=lambda u: (u.get("name") or u.get("email") or "").lower())
    return UsersPage(org=org, orgs=orgs, users=users, can_edit=can_edit)
