"""Who may do what: roles and their scopes, checked before any command records an event."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from aqueduct_directory.domain.errors import PermissionDeniedError
from aqueduct_directory.domain.org import Org, Team

__all__ = ["SYSTEM", "Principal", "above_org_bounds"]


@dataclass(frozen=True)
class Principal:
    """The caller of a command with roles as the directory knows them now (not as a session claims)."""

    user_id: str
    org_id: str | None = None
    admin: bool = False
    org_admin: bool = False
    team_ids: frozenset[str] = field(default_factory=frozenset)
    team_admin_ids: frozenset[str] = field(default_factory=frozenset)
    # Authenticated with an API token rather than a session (see ``as_api_token``).
    via_api_token: bool = False

    def as_api_token(self, management: bool) -> Principal:
        """The caller as an API token acts on the management API: with its owner's roles only when the
        token was created with management access; otherwise as a plain User (own tokens, own usage), so a
        leaked inference token cannot administer anything."""
        if management:
            return replace(self, via_api_token=True)
        return replace(self, admin=False, org_admin=False, team_admin_ids=frozenset(), via_api_token=True)

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


def above_org_bounds(
    org: Org,
    team: Team,
    limits: Mapping[str, int] | None = None,
    budgets: Mapping[str, Any] | None = None,
    model_limits: Mapping[str, Mapping[str, int]] | None = None,
) -> list[str]:
    """What a Team-Admin's new (cleaned) team values would raise above the org's own, as phrases.

    The bound of a per-minute limit is the org's default limit, of a per-model limit the org's limit
    for the same model, of a budget the org's budget; where the org sets none there is no bound.
    Only values that change are checked: a value an Org-Admin set stays until someone changes it, and
    clearing a value (inherit from the org) is always allowed.
    """
    found: list[str] = []

    def check(
        what: str, new: Mapping[str, Any], current: Mapping[str, Any], bound: Mapping[str, Any]
    ) -> None:
        for key, value in new.items():
            if value == current.get(key) or key not in bound:
                continue
            if Decimal(str(value)) > Decimal(str(bound[key])):
                found.append(f"{what}{key.replace('_', ' ')} {value} is above the org's {bound[key]}")

    if limits is not None:
        check("", limits, team.limits, org.limits)
    if budgets is not None:
        check("budget ", budgets, team.budgets, org.budgets)
    for model, model_values in (model_limits or {}).items():
        bound = org.model_limits.get(model, {})
        check(f"{model} ", model_values, team.model_limits.get(model, {}), bound)
    return found
