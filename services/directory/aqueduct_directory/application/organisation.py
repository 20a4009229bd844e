"""Use cases on orgs, teams and users, each checking permissions before recording anything."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate

from aqueduct_directory.application.base import DirectoryCore
from aqueduct_directory.application.lazy_views import LazyViews, Projection
from aqueduct_directory.application.views import org_view, team_brief_view, team_view, user_view
from aqueduct_directory.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from aqueduct_directory.domain.inputs import check_description, check_email, check_name
from aqueduct_directory.domain.org import Org, Team, User
from aqueduct_directory.domain.policy import Principal, above_org_bounds
from aqueduct_directory.domain.values import clean_budgets, clean_limits, clean_model_limits, clean_models

__all__ = ["OrganisationUseCases"]

_UNSET: Any = object()


def _name(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidInputError(f"{what} must not be empty")
    return value


def _org_name(value: str | None) -> str:
    return check_name(value, "name", "the org name")


def _team_name(value: str | None) -> str:
    return check_name(value, "name", "the team name")


def _sso_group(value: str | None) -> str | None:
    return check_name(value, "sso_group", "the SSO group", 200, required=False) or None


def _description(value: str | None) -> str:
    return check_description(value, "description", "the team description")


def _person_name(value: str | None) -> str:
    return check_name(value, "name", "the name", 200, required=False)


class OrganisationUseCases(DirectoryCore):
    # -- orgs --------------------------------------------------------------------------------------

    def create_org(
        self,
        p: Principal,
        name: str,
        sso_group: str | None = None,
        limits: dict[str, Any] | None = None,
        budgets: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        p.require_admin("create orgs")
        name = _org_name(name)
        if self.state.org_by_name(name):
            raise ConflictError(f"an org named {name!r} exists", "org_exists")
        org = Org(name, _sso_group(sso_group), clean_limits(limits), clean_budgets(budgets), actor=p.actor)
        self.commit(org)
        return org_view(self.state.orgs[str(org.id)])

    def update_org(
        self,
        p: Principal,
        org_id: str,
        name: str | None = None,
        sso_group: Any = _UNSET,
        limits: dict[str, Any] | None = None,
        budgets: dict[str, Any] | None = None,
        excluded_models: list[str] | None = None,
        model_limits: dict[str, Any] | None = None,
        default_team_id: Any = _UNSET,
    ) -> dict[str, Any]:
        p.require_admin("change orgs")
        org = self.editable(self.find(self.state.orgs, org_id, "org"))
        new_name = _org_name(name) if name is not None else org.name
        new_group = org.sso_group if sso_group is _UNSET else _sso_group(sso_group)
        if new_name != org.name and self.state.org_by_name(new_name):
            raise ConflictError(f"an org named {new_name!r} exists", "org_exists")
        if (new_name, new_group) != (org.name, org.sso_group):
            org.update(new_name, new_group, actor=p.actor)
        if limits is not None and clean_limits(limits) != org.limits:
            org.set_limits(clean_limits(limits), actor=p.actor)
        if budgets is not None and clean_budgets(budgets) != org.budgets:
            org.set_budgets(clean_budgets(budgets), actor=p.actor)
        if excluded_models is not None and clean_models(excluded_models) != org.excluded_models:
            org.set_excluded_models(clean_models(excluded_models), actor=p.actor)
        if model_limits is not None and clean_model_limits(model_limits) != org.model_limits:
            org.set_model_limits(clean_model_limits(model_limits), actor=p.actor)
        if default_team_id is not _UNSET and (default_team_id or None) != org.default_team_id:
            if default_team_id and self.find(self.state.teams, default_team_id, "team").org_id != org_id:
                raise InvalidInputError("the default team must belong to the org", "wrong_org")
            org.set_default_team(default_team_id or None, actor=p.actor)
        self.commit(org)
        return org_view(self.state.orgs[org_id])

    def get_org(self, p: Principal, org_id: str) -> dict[str, Any]:
        org = self.find(self.state.orgs, org_id, "org")
        p.require_in_org(org_id, "see this org")
        return org_view(org)

    def list_orgs(self, p: Principal) -> list[dict[str, Any]]:
        orgs = sorted(self.state.orgs.values(), key=lambda o: o.name)
        return [org_view(o) for o in orgs if p.admin or str(o.id) == p.org_id]

    # -- teams -------------------------------------------------------------------------------------

    def create_team(
        self,
        p: Principal,
        org_id: str,
        name: str,
        description: str = "",
        limits: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.find(self.state.orgs, org_id, "org")
        p.require_org_admin(org_id, "create teams")
        name = _team_name(name)
        if self.state.team_by_name(org_id, name):
            raise ConflictError(f"a team named {name!r} exists in this org", "team_exists")
        team = Team(org_id, name, _description(description), clean_limits(limits), actor=p.actor)
        self.commit(team)
        return team_view(self.state.teams[str(team.id)], self.state)

    def update_team(
        self,
        p: Principal,
        team_id: str,
        name: str | None = None,
        description: str | None = None,
        limits: dict[str, Any] | None = None,
        budgets: dict[str, Any] | None = None,
        excluded_models: list[str] | None = None,
        model_limits: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        team = self.editable(self.find(self.state.teams, team_id, "team"))
        if not p.is_org_admin_of(team.org_id):
            # A Team-Admin sets the team's limits and budgets, never above the org's own values.
            p.require_team_admin(team, "change the team's limits and budgets")
            if any(v is not None for v in (name, description, excluded_models)):
                p.require_org_admin(team.org_id, "change a team's name, description or excluded models")
            above = above_org_bounds(
                self.state.orgs[team.org_id],
                team,
                clean_limits(limits) if limits is not None else None,
                clean_budgets(budgets) if budgets is not None else None,
                clean_model_limits(model_limits) if model_limits is not None else None,
            )
            if above:
                raise PermissionDeniedError(
                    f"a Team-Admin may set the team's values up to the org's own: {'; '.join(above)}",
                    "above_org_bound",
                )
        new_name = _team_name(name) if name is not None else team.name
        new_description = _description(description) if description is not None else team.description
        if new_name != team.name and self.state.team_by_name(team.org_id, new_name):
            raise ConflictError(f"a team named {new_name!r} exists in this org", "team_exists")
        if (new_name, new_description) != (team.name, team.description):
            team.update(new_name, new_description, actor=p.actor)
        if limits is not None and clean_limits(limits) != team.limits:
            team.set_limits(clean_limits(limits), actor=p.actor)
        if budgets is not None and clean_budgets(budgets) != team.budgets:
            team.set_budgets(clean_budgets(budgets), actor=p.actor)
        if excluded_models is not None and clean_models(excluded_models) != team.excluded_models:
            team.set_excluded_models(clean_models(excluded_models), actor=p.actor)
        if model_limits is not None and clean_model_limits(model_limits) != team.model_limits:
            team.set_model_limits(clean_model_limits(model_limits), actor=p.actor)
        self.commit(team)
        return team_view(self.state.teams[team_id], self.state)

    def delete_team(self, p: Principal, team_id: str) -> None:
        team = self.editable(self.find(self.state.teams, team_id, "team"))
        p.require_org_admin(team.org_id, "delete teams")
        doomed: list[Aggregate] = []
        # The team's service accounts and their tokens go with it, in the same transaction.
        for sa in self.state.team_service_accounts(team_id):
            sa = self.editable(sa)
            sa.delete(actor=p.actor)
            doomed.append(sa)
            token = self.state.tokens.get(sa.token_id or "")
            if token is not None and not token.revoked:
                token = self.editable(token)
                token.revoke(actor=p.actor)
                doomed.append(token)
        team.delete(actor=p.actor)
        self.commit(team, *doomed)

    def get_team(self, p: Principal, team_id: str) -> dict[str, Any]:
        team = self.find(self.state.teams, team_id, "team")
        p.require_in_org(team.org_id, "see this team")
        return team_view(team, self.state)

    def list_teams(
        self, p: Principal, org_id: str | None = None, brief: bool = False
    ) -> list[dict[str, Any]]:
        """The live teams; ``brief``: without members, with their number (what lists and pickers show)."""
        if not p.admin:
            org_id = p.org_id
        projection = self.kept_projection(
            ("teams", org_id), "Team", lambda: Projection(self.state.live_teams(org_id), _team_brief)
        )
        view = team_brief_view if brief else lambda t: team_view(t, self.state)
        return LazyViews(projection, view)  # type: ignore[return-value]

    def add_member(
        self, p: Principal, team_id: str, user_id: str, team_admin: bool = False
    ) -> dict[str, Any]:
        team = self.editable(self.find(self.state.teams, team_id, "team"))
        p.require_team_admin(team, "add members")
        user = self.find(self.state.users, user_id, "user")
        if user.org_id != team.org_id:
            raise InvalidInputError("only users of the team's org can join it", "wrong_org")
        team.add_member(user_id, bool(team_admin), self.clock(), actor=p.actor)
        self.commit(team)
        return team_view(self.state.teams[team_id], self.state)

    def remove_member(self, p: Principal, team_id: str, user_id: str) -> None:
        team = self.editable(self.find(self.state.teams, team_id, "team"))
        p.require_team_admin(team, "remove members")
        owned = self.state.service_accounts_owned(user_id, team_id)
        if owned:
            names = ", ".join(sorted(s.name for s in owned))
            raise ConflictError(
                f"the user owns service accounts of this team ({names}); transfer them first",
                "owns_service_account",
            )
        team.remove_member(user_id, actor=p.actor)
        self.commit(team)

    def promote_member(self, p: Principal, team_id: str, user_id: str) -> dict[str, Any]:
        team = self.editable(self.find(self.state.teams, team_id, "team"))
        p.require_team_admin(team, "promote members")
        team.promote_member(user_id, actor=p.actor)
        self.commit(team)
        return team_view(self.state.teams[team_id], self.state)

    def demote_member(self, p: Principal, team_id: str, user_id: str) -> dict[str, Any]:
        """A Team-Admin becomes a plain member; the user stays in the team."""
        team = self.editable(self.find(self.state.teams, team_id, "team"))
        p.require_team_admin(team, "demote Team-Admins")
        team.demote_member(user_id, actor=p.actor)
        self.commit(team)
        return team_view(self.state.teams[team_id], self.state)

    # -- users -------------------------------------------------------------------------------------

    def create_user(
        self,
        p: Principal,
        org_id: str,
        email: str,
        name: str = "",
        org_admin: bool = False,
        admin: bool = False,
        subject: str | None = None,
    ) -> dict[str, Any]:
        self.find(self.state.orgs, org_id, "org")
        p.require_org_admin(org_id, "add users")
        if admin:
            p.require_admin("make Admins")
        email, name = check_email(email), _person_name(name)
        if email.lower() in self.state.users_by_email:
            raise ConflictError(f"a user with email {email!r} exists", "user_exists")
        if subject and subject in self.state.users_by_subject:
            raise ConflictError("a user with this identity exists", "user_exists")
        user = User(org_id, email, name or email, subject, bool(admin), bool(org_admin), actor=p.actor)
        self.commit(user)
        return user_view(self.state.users[str(user.id)], self.state)

    def update_user(
        self,
        p: Principal,
        user_id: str,
        name: str | None = None,
        email: str | None = None,
        limits: dict[str, Any] | None = None,
        budgets: dict[str, Any] | None = None,
        excluded_models: list[str] | None = None,
        model_limits: dict[str, Any] | None = None,
        org_admin: bool | None = None,
        admin: bool | None = None,
    ) -> dict[str, Any]:
        user = self.editable(self.find(self.state.users, user_id, "user"))
        if user_id != p.user_id or any(
            v is not None for v in (limits, budgets, excluded_models, model_limits)
        ):
            p.require_org_admin(user.org_id, "change other users or their limits")
        if org_admin is not None and org_admin != user.org_admin:
            p.require_org_admin(user.org_id, "grant Org-Admin")
        if admin is not None and admin != user.admin:
            p.require_admin("grant Admin")
        if user.admin and user_id != p.user_id:
            p.require_admin("change an Admin's profile")
        new_email = user.email if email is None or email == user.email else check_email(email)
        if new_email.lower() != user.email.lower() and new_email.lower() in self.state.users_by_email:
            raise ConflictError(f"a user with email {new_email!r} exists", "user_exists")
        new_name = check_name(name, "name", "the name", 200) if name is not None else user.name
        if (new_name, new_email) != (user.name, user.email):
            user.update_profile(new_name, new_email, actor=p.actor)
        roles = (user.admin if admin is None else admin, user.org_admin if org_admin is None else org_admin)
        if roles != (user.admin, user.org_admin):
            user.change_roles(roles[0], roles[1], actor=p.actor)
        if limits is not None and clean_limits(limits) != user.limits:
            user.set_limits(clean_limits(limits), actor=p.actor)
        if budgets is not None and clean_budgets(budgets) != user.budgets:
            user.set_budgets(clean_budgets(budgets), actor=p.actor)
        if excluded_models is not None and clean_models(excluded_models) != user.excluded_models:
            user.set_excluded_models(clean_models(excluded_models), actor=p.actor)
        if model_limits is not None and clean_model_limits(model_limits) != user.model_limits:
            user.set_model_limits(clean_model_limits(model_limits), actor=p.actor)
        self.commit(user)
        return user_view(self.state.users[user_id], self.state)

    def deactivate_user(self, p: Principal, user_id: str) -> None:
        """The user can no longer sign in and none of their tokens authenticate; history stays."""
        user = self.editable(self.find(self.state.users, user_id, "user"))
        p.require_org_admin(user.org_id, "deactivate users")
        if user.admin:
            p.require_admin("deactivate Admins")
        owned = self.state.service_accounts_owned(user_id)
        if owned:
            names = ", ".join(sorted(s.name for s in owned))
            raise ConflictError(
                f"the user owns service accounts ({names}); transfer them first", "owns_service_account"
            )
        user.deactivate(actor=p.actor)
        self.commit(user)

    def reactivate_user(self, p: Principal, user_id: str) -> dict[str, Any]:
        """A deactivated user signs in again and their tokens that are still valid work again."""
        found = self.state.users.get(user_id)
        if found is None:
            raise NotFoundError(f"user {user_id!r} not found", "user_not_found")
        p.require_org_admin(found.org_id, "reactivate users")
        if found.admin:
            p.require_admin("reactivate Admins")
        if not found.deleted:
            raise ConflictError("the user is active", "user_active")
        user = self.editable(found)
        user.reactivate(actor=p.actor)
        self.commit(user)
        return user_view(self.state.users[user_id], self.state)

    def get_user(self, p: Principal, user_id: str) -> dict[str, Any]:
        """A user; a deactivated one (``deleted: true``) only for the Org-Admins of their org, who may
        reactivate them."""
        user = self.state.users.get(user_id)
        if user is None or (user.deleted and not p.is_org_admin_of(user.org_id)):
            raise NotFoundError(f"user {user_id!r} not found", "user_not_found")
        if user_id != p.user_id:
            p.require_org_admin(user.org_id, "see other users")
        return user_view(user, self.state)

    def list_users(
        self, p: Principal, org_id: str | None = None, include_deactivated: bool = False
    ) -> list[dict[str, Any]]:
        if not p.admin:
            if not (p.org_admin or p.team_admin_ids):
                # Plain users see only themselves; Team-Admins pick new members from their whole org.
                return [user_view(self.find(self.state.users, p.user_id, "user"), self.state)]
            org_id = p.org_id
            include_deactivated = include_deactivated and p.org_admin
        state = self.state
        projection = self.kept_projection(
            ("users", org_id, include_deactivated),
            "User",
            lambda: Projection(
                state.all_users(org_id) if include_deactivated else state.live_users(org_id), _user_brief
            ),
        )
        return LazyViews(projection, lambda u: user_view(u, state))  # type: ignore[return-value]

    def me(self, p: Principal) -> dict[str, Any]:
        view = user_view(self.find(self.state.users, p.user_id, "user"), self.state)
        current = self.state.terms.current if self.state.terms else None
        view["max_tokens_per_user"] = self.max_tokens_per_user
        view["tos_current"] = current
        view["tos_accepted"] = current is None or view["tos_accepted_version"] == current["version"]
        # The roles this credential acts with (an API token without management access: a plain User),
        # which other services (accounting) apply to API tokens.
        view["acting"] = {
            "admin": p.admin,
            "org_admin": p.org_admin,
            "team_ids": sorted(p.team_ids),
            "team_admin_ids": sorted(p.team_admin_ids),
            "api_token": p.via_api_token,
        }
        return view

    def accept_terms(self, p: Principal, version: str) -> dict[str, Any]:
        user = self.editable(self.find(self.state.users, p.user_id, "user"))
        current = self.state.terms.current if self.state.terms else None
        if current is None or current["version"] != version:
            raise NotFoundError(f"{version!r} is not the current terms of service version", "tos_not_current")
        if user.tos_accepted_version != version:
            user.accept_terms(version, actor=p.actor)
            self.commit(user)
        return user_view(self.state.users[p.user_id], self.state)

    # -- sign-in (asked by the auth service) -------------------------------------------------------

    def sign_in(
        self,
        subject: str,
        email: str = "",
        name: str = "",
        groups: list[str] | None = None,
        admin: bool = False,
        email_verified: bool = False,
        renewal: bool = False,
    ) -> dict[str, Any]:
        """Resolve an identity to a user, provisioning on first sign-in. Acts as "system".

        An identity is linked to a user invited by email only when the provider verified that email.
        ``renewal``: a session renewing with the claims of its sign-in; roles are read, never changed.
        """
        subject = _name(subject, "subject")
        user_id = self.state.users_by_subject.get(subject)
        if user_id is None and email_verified and email and email.lower() in self.state.users_by_email:
            user_id = self.state.users_by_email[email.lower()]  # invited by email before first sign-in
            user = self.editable(self.state.users[user_id])
            if user.deleted:
                raise NotFoundError("this user was deactivated", "user_deactivated")
            if user.subject and user.subject != subject:
                raise ConflictError("this email belongs to another identity", "identity_conflict")
            user.link_subject(subject, actor="system")
            self.commit(user)
        if user_id is None:
            org = self.state.org_by_sso_group(groups or [])
            if org is None and (admin or subject.startswith("local:")):
                org = self.state.org_by_name(self.default_org) or self._create_default_org()
            if org is None:
                raise NotFoundError("no org is mapped from the user's groups", "no_org")
            fallback_email = email or f"{subject.split(':')[-1]}@local"
            if fallback_email.lower() in self.state.users_by_email:
                fallback_email = f"{subject}@local"
            user = User(
                str(org.id), fallback_email, name or subject.split(":")[-1], subject, False, False, "system"
            )
            if admin:
                user.set_admin_at_sign_in(True, actor="system")
            joined = []
            default_team = self.state.teams.get(org.default_team_id or "")
            if default_team is not None and not default_team.deleted:
                # As in the seed design: every new user of the org starts in its default team.
                team = self.editable(default_team)
                team.add_member(str(user.id), False, self.clock(), actor="system")
                joined.append(team)
            self.commit(user, *joined)
            user_id = str(user.id)
        user = self.state.users[user_id]
        if user.deleted:
            raise NotFoundError("this user was deactivated", "user_deactivated")
        if not renewal and admin != user.admin and (admin or user.admin_from_sign_in):
            # Every sign-in re-evaluates what the identity provider's admin group grants: granted when in
            # the group, taken back when no longer. A grant by an Admin in the product is never taken.
            editable = self.editable(user)
            editable.set_admin_at_sign_in(admin, actor="system")
            self.commit(editable)
        view = user_view(self.state.users[user_id], self.state)
        return {
            "user_id": user_id,
            "org_id": view["org_id"],
            "name": view["name"],
            "email": view["email"],
            "admin": view["admin"],
            "org_admin": view["org_admin"],
            "teams": view["teams"],
            "team_admin": view["team_admin"],
        }

    def _create_default_org(self) -> Org:
        org = Org(self.default_org, None, {}, {}, actor="system")
        self.commit(org)
        return self.state.orgs[str(org.id)]


def _user_brief(user: Any) -> dict[str, Any]:
    """The fields the users list searches and sorts by, without building the whole view."""
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "org_id": user.org_id,
        "created_at": user.created_on.isoformat() if user.created_on else None,
    }


def _team_brief(team: Any) -> dict[str, Any]:
    return {"id": str(team.id), "name": team.name, "description": team.description, "org_id": team.org_id}
