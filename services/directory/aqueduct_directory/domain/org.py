"""Orgs, teams and users: who belongs where, with which roles, limits, budgets and exclusions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

from aqueduct_directory.domain.errors import ConflictError, NotFoundError

__all__ = ["Org", "Team", "User"]


class Org(Aggregate):
    """Holds the defaults every team and user of the org inherits, and the SSO group mapped to it."""

    @event("OrgCreated")
    def __init__(
        self,
        name: str,
        sso_group: str | None,
        limits: dict[str, int],
        budgets: dict[str, Any],
        actor: str,
    ) -> None:
        self.name = name
        self.sso_group = sso_group
        self.limits = limits
        self.budgets = budgets
        self.excluded_models: list[str] = []
        self.model_limits: dict[str, dict[str, int]] = {}
        self.default_team_id: str | None = None

    @event("OrgUpdated")
    def update(self, name: str, sso_group: str | None, actor: str) -> None:
        self.name = name
        self.sso_group = sso_group

    @event("OrgDefaultTeamSet")
    def set_default_team(self, team_id: str | None, actor: str) -> None:
        """New users join this team on first sign-in."""
        self.default_team_id = team_id

    @event("OrgLimitsSet")
    def set_limits(self, limits: dict[str, int], actor: str) -> None:
        self.limits = limits

    @event("OrgBudgetsSet")
    def set_budgets(self, budgets: dict[str, Any], actor: str) -> None:
        self.budgets = budgets

    @event("OrgModelsExcluded")
    def set_excluded_models(self, excluded_models: list[str], actor: str) -> None:
        self.excluded_models = excluded_models

    @event("OrgModelLimitsSet")
    def set_model_limits(self, model_limits: dict[str, dict[str, int]], actor: str) -> None:
        self.model_limits = model_limits


class Team(Aggregate):
    """A team's limits override its org's; ``members`` maps user id -> {team_admin, joined_at}."""

    @event("TeamCreated")
    def __init__(self, org_id: str, name: str, description: str, limits: dict[str, int], actor: str) -> None:
        self.org_id = org_id
        self.name = name
        self.description = description
        self.limits = limits
        self.budgets: dict[str, Any] = {}
        self.excluded_models: list[str] = []
        self.model_limits: dict[str, dict[str, int]] = {}
        self.members: dict[str, dict[str, Any]] = {}
        self.deleted = False

    @event("TeamUpdated")
    def update(self, name: str, description: str, actor: str) -> None:
        self.name = name
        self.description = description

    @event("TeamLimitsSet")
    def set_limits(self, limits: dict[str, int], actor: str) -> None:
        self.limits = limits

    @event("TeamBudgetsSet")
    def set_budgets(self, budgets: dict[str, Any], actor: str) -> None:
        self.budgets = budgets

    @event("TeamModelsExcluded")
    def set_excluded_models(self, excluded_models: list[str], actor: str) -> None:
        self.excluded_models = excluded_models

    @event("TeamModelLimitsSet")
    def set_model_limits(self, model_limits: dict[str, dict[str, int]], actor: str) -> None:
        self.model_limits = model_limits

    def add_member(self, user_id: str, team_admin: bool, joined_at: datetime, actor: str) -> None:
        if user_id in self.members:
            raise ConflictError("the user is already a member of this team", "already_member")
        self._add_member(user_id, team_admin, joined_at.isoformat(), actor)

    @event("MemberAdded")
    def _add_member(self, user_id: str, team_admin: bool, joined_at: str, actor: str) -> None:
        self.members = {**self.members, user_id: {"team_admin": team_admin, "joined_at": joined_at}}

    def remove_member(self, user_id: str, actor: str) -> None:
        if user_id not in self.members:
            raise NotFoundError("the user is not a member of this team", "not_member")
        self._remove_member(user_id, actor)

    @event("MemberRemoved")
    def _remove_member(self, user_id: str, actor: str) -> None:
        self.members = {k: v for k, v in self.members.items() if k != user_id}

    def promote_member(self, user_id: str, actor: str) -> None:
        if user_id not in self.members:
            raise NotFoundError("the user is not a member of this team", "not_member")
        self._promote_member(user_id, actor)

    @event("MemberPromoted")
    def _promote_member(self, user_id: str, actor: str) -> None:
        self.members = {**self.members, user_id: {**self.members[user_id], "team_admin": True}}

    def demote_member(self, user_id: str, actor: str) -> None:
        if user_id not in self.members:
            raise NotFoundError("the user is not a member of this team", "not_member")
        if not self.members[user_id].get("team_admin"):
            raise ConflictError("the member is not a Team-Admin", "not_team_admin")
        self._demote_member(user_id, actor)

    @event("MemberDemoted")
    def _demote_member(self, user_id: str, actor: str) -> None:
        self.members = {**self.members, user_id: {**self.members[user_id], "team_admin": False}}

    @event("TeamDeleted")
    def delete(self, actor: str) -> None:
        self.deleted = True
        self.members = {}

    def is_admin(self, user_id: str) -> bool:
        return bool(self.members.get(user_id, {}).get("team_admin"))


class User(Aggregate):
    """A person. ``subject`` links them to an identity ("local:admin", "oidc:<issuer>:<sub>").

    Admin comes from one of two places: an Admin in the product (``change_roles``), which stays until an
    Admin takes it away, or the identity provider at sign-in (``set_admin_at_sign_in``: its admin group),
    which every sign-in re-evaluates. ``admin_from_sign_in`` remembers which.
    """

    # Users recorded before the origin was tracked count as granted in the product: nothing is taken.
    admin_from_sign_in = False

    @event("UserRegistered")
    def __init__(
        self,
        org_id: str,
        email: str,
        name: str,
        subject: str | None,
        admin: bool,
        org_admin: bool,
        actor: str,
    ) -> None:
        self.org_id = org_id
        self.email = email
        self.name = name
        self.subject = subject
        self.admin = admin
        self.org_admin = org_admin
        self.limits: dict[str, int] = {}
        self.budgets: dict[str, Any] = {}
        self.excluded_models: list[str] = []
        self.model_limits: dict[str, dict[str, int]] = {}
        self.tos_accepted_version: str | None = None
        self.deleted = False

    @event("UserProfileUpdated")
    def update_profile(self, name: str, email: str, actor: str) -> None:
        self.name = name
        self.email = email

    @event("UserSubjectLinked")
    def link_subject(self, subject: str, actor: str) -> None:
        self.subject = subject

    @event("UserRolesChanged")
    def change_roles(self, admin: bool, org_admin: bool, actor: str) -> None:
        if admin != self.admin:
            self.admin_from_sign_in = False  # an Admin's decision in the product from now on
        self.admin = admin
        self.org_admin = org_admin

    @event("UserAdminSetAtSignIn")
    def set_admin_at_sign_in(self, admin: bool, actor: str) -> None:
        """The identity provider's groups granted (or, for a grant of its own, took back) Admin."""
        self.admin = admin
        self.admin_from_sign_in = admin

    @event("UserLimitsSet")
    def set_limits(self, limits: dict[str, int], actor: str) -> None:
        self.limits = limits

    @event("UserBudgetsSet")
    def set_budgets(self, budgets: dict[str, Any], actor: str) -> None:
        self.budgets = budgets

    @event("UserModelsExcluded")
    def set_excluded_models(self, excluded_models: list[str], actor: str) -> None:
        self.excluded_models = excluded_models

    @event("UserModelLimitsSet")
    def set_model_limits(self, model_limits: dict[str, dict[str, int]], actor: str) -> None:
        self.model_limits = model_limits

    @event("TermsAccepted")
    def accept_terms(self, version: str, actor: str) -> None:
        self.tos_accepted_version = version

    @event("UserDeactivated")
    def deactivate(self, actor: str) -> None:
        self.deleted = True

    @event("UserReactivated")
    def reactivate(self, actor: str) -> None:
        self.deleted = False
