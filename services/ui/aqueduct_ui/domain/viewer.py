"""Who is looking, and which actions the pages offer them.

These rules only decide what to *show*; the directory and accounting APIs enforce the same rules again
with the user's own session, so a forced request is still refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aqueduct_libs.sessions import SessionClaims

__all__ = ["Roles", "Viewer", "role_tag"]


@dataclass(frozen=True)
class Roles:
    """What a user may do, as the directory has it now (a session's claims have it as at sign-in)."""

    admin: bool = False
    org_admin: bool = False
    org_id: str | None = None
    teams: frozenset[str] = frozenset()
    team_admin: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Viewer:
    user_id: str
    name: str
    email: str
    org_id: str | None
    admin: bool = False
    org_admin: bool = False
    teams: frozenset[str] = field(default_factory=frozenset)
    team_admin: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_claims(cls, claims: SessionClaims, current: Roles | None = None) -> Viewer:
        """The signed-in user; with ``current``, their roles now rather than those of the sign-in."""
        roles = current or Roles(
            claims.admin, claims.org_admin, claims.org, frozenset(claims.teams), frozenset(claims.team_admin)
        )
        return cls(
            user_id=claims.sub,
            name=claims.name or claims.email or claims.sub,
            email=claims.email,
            org_id=roles.org_id or claims.org,
            admin=roles.admin,
            org_admin=roles.org_admin,
            teams=roles.teams,
            team_admin=roles.team_admin,
        )

    @property
    def role(self) -> str:
        if self.admin:
            return "Admin"
        if self.org_admin:
            return "Org-Admin"
        if self.team_admin:
            return "Team-Admin"
        return "User"

    def manages_org(self, org_id: str | None) -> bool:
        return self.admin or (self.org_admin and org_id is not None and org_id == self.org_id)

    def manages_team(self, team_id: str, org_id: str | None = None) -> bool:
        return team_id in self.team_admin or self.manages_org(org_id or self.org_id)

    @property
    def can_administer(self) -> bool:
        return self.admin

    @property
    def can_create_teams(self) -> bool:
        return self.admin or self.org_admin

    @property
    def usage_scopes(self) -> tuple[str, ...]:
        """Which groupings make sense on the usage page for this role."""
        if self.admin:
            return ("model", "org", "team", "user", "token")
        if self.org_admin:
            return ("model", "team", "user", "token")
        if self.team_admin:
            return ("model", "user", "token")
        return ("model", "token")


def role_tag(member: dict) -> str:
    """The tag of a team member: the strongest role they hold."""
    if member.get("admin"):
        return "Admin"
    if member.get("org_admin"):
        return "Org-Admin"
    if member.get("team_admin"):
        return "Team-Admin"
    return "User"
