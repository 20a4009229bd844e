"""Who may do what: roles and their scopes, checked before any command records an event."""

from __future__ import annotations

from dataclasses import dataclass, field

from aqueduct_directory.domain.errors import PermissionDeniedError
from aqueduct_directory.domain.org import Team

__all__ = ["SYSTEM", "Principal"]


@dataclass(frozen=True)
class Principal:
    """The caller of a command with roles as the directory knows them now (not as a session claims)."""

    user_id: str
    org_id: str | None = None
    admin: bool = False
    org_admin: bool = False
    team_ids: frozenset[str] = field(default_factory=frozenset)
    team_admin_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> str:
        return self.user_id

    def is_org_admin_of(self, org_id: str) -> bool:
        return self.admin or (self.org_admin and self.org_id == org_id)

    def is_team_admin_of(self, team: Team) -> bool:
        return self.is_org_admin_of(team.org_id) or str(team.id) in self.team_admin_ids

    def is_member_of(self, team: Team) -> bool:
        return self.is_org_admin_of(team.org_id) or str(team.id) in self.team_ids

    def require_admin(self, what: str) -> None:
        if not self.admin:
            raise PermissionDeniedError(f"only an Admin may {what}")

    def require_org_admin(self, org_id: str, what: str) -> None:
        if not self.is_org_admin_of(org_id):
            raise PermissionDeniedError(f"only an Org-Admin of this org may {what}")

    def require_team_admin(self, team: Team, what: str) -> None:
        if not self.is_team_admin_of(team):
            raise PermissionDeniedError(f"only a Team-Admin of this team may {what}")

    def require_in_org(self, org_id: str, what: str) -> None:
        if not (self.admin or self.org_id == org_id):
            raise PermissionDeniedError(f"only members of this org may {what}")


SYSTEM = Principal(user_id="system", admin=True)
