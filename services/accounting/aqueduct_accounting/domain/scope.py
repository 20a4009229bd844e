"""Who may see whose usage. User: their own; Team-Admin: the teams they administer; Org-Admin: their
org; Admin: everything. The visibility rule is always added to the query, so a filter can narrow what a
viewer sees but never widen it; asking explicitly for something out of reach is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aqueduct_libs.sessions import SessionClaims

__all__ = ["ForbiddenError", "UsageFilter", "Viewer", "scope_predicate"]


class ForbiddenError(Exception):
    """The viewer asked for usage they may not see."""


@dataclass(frozen=True)
class Viewer:
    user_id: str
    org_id: str | None = None
    admin: bool = False
    org_admin: bool = False
    teams: tuple[str, ...] = ()
    team_admin: tuple[str, ...] = ()

    @classmethod
    def from_claims(cls, claims: SessionClaims) -> Viewer:
        return cls(
            user_id=claims.sub,
            org_id=claims.org,
            admin=claims.admin,
            org_admin=claims.org_admin and bool(claims.org),
            teams=tuple(claims.teams),
            team_admin=tuple(claims.team_admin),
        )


@dataclass(frozen=True)
class UsageFilter:
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    token_id: str | None = None
    model: str | None = None


def _check_reach(viewer: Viewer, wanted: UsageFilter) -> None:
    if viewer.admin:
        return
    if wanted.org_id is not None and wanted.org_id != viewer.org_id:
        raise ForbiddenError("you may not read the usage of another org")
    if (
        wanted.team_id is not None
        and not viewer.org_admin
        and wanted.team_id not in viewer.team_admin
        and wanted.team_id not in viewer.teams
    ):
        raise ForbiddenError("you may not read the usage of a team you do not belong to")
    if (
        wanted.user_id is not None
        and wanted.user_id != viewer.user_id
        and not viewer.org_admin
        and not viewer.team_admin
    ):
        raise ForbiddenError("you may only read your own usage")


def scope_predicate(viewer: Viewer, wanted: UsageFilter) -> tuple[str, dict[str, Any]]:
    """A WHERE fragment (and its parameters) selecting what ``viewer`` may see of ``wanted``."""
    _check_reach(viewer, wanted)
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if not viewer.admin:
        visible = ["user_id = {scope_user:String}"]
        params["scope_user"] = viewer.user_id
        if viewer.team_admin:
            visible.append("team_id IN {scope_teams:Array(String)}")
            params["scope_teams"] = list(viewer.team_admin)
        if viewer.org_admin:
            visible.append("org_id = {scope_org:String}")
            params["scope_org"] = viewer.org_id
        clauses.append("(" + " OR ".join(visible) + ")")
    for column in ("org_id", "team_id", "user_id", "token_id", "model"):
        value = getattr(wanted, column)
        if value is not None:
            clauses.append(f"{column} = {{f_{column}:String}}")
            params[f"f_{column}"] = value
    return (" AND ".join(clauses) or "1"), params
