"""Use cases on API tokens and service accounts. Token values leave only through these answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aqueduct_directory.application.base import DirectoryCore
from aqueduct_directory.application.views import service_account_view, token_view
from aqueduct_directory.domain.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from aqueduct_directory.domain.grants import effective_team
from aqueduct_directory.domain.inputs import check_description, check_name
from aqueduct_directory.domain.policy import Principal
from aqueduct_directory.domain.token import ServiceAccount, Token
from aqueduct_directory.domain.values import clean_limits
from aqueduct_libs.tokens import generate_token, hash_token, preview_token

__all__ = ["UNSET", "TokenUseCases", "Unset"]


class Unset:
    """An argument that was not given (where None means something: "never expires")."""


UNSET = Unset()


def _sa_description(value: str | None) -> str:
    # The user guide: "Service accounts require a name and description" (what the account is for).
    return check_description(value, "description", "the service account's description", required=True)


class TokenUseCases(DirectoryCore):
    def _new_value(self) -> tuple[str, str, str]:
        value = generate_token()
        return value, hash_token(value, self.secret_key), preview_token(value)

    def _token_answer(self, token_id: str, value: str) -> dict[str, Any]:
        return {"token": self.token_view(token_id), "value": value}

    def token_view(self, token_id: str) -> dict[str, Any]:
        token = self.state.tokens[token_id]
        team = effective_team(self.state, token)
        return token_view(token, str(team.id) if team else "")

    def _require_token_manager(self, p: Principal, token: Token, what: str) -> None:
        if token.service_account_id:
            team = self.state.teams.get(token.team_id or "")
            if team is None or not p.is_team_admin_of(team):
                raise PermissionDeniedError(f"only a Team-Admin of the service account's team may {what}")
        elif token.user_id != p.user_id and not p.admin:
            raise PermissionDeniedError(f"only the token's owner may {what}")

    # -- personal tokens ---------------------------------------------------------------------------

    def issue_token(
        self,
        p: Principal,
        name: str,
        expires_at: datetime | None = None,
        team_id: str | None = None,
        management: bool = False,
    ) -> dict[str, Any]:
        user = self.find(self.state.users, p.user_id, "user")
        name = check_name(name, "name", "the token name")
        if management and p.via_api_token:
            raise PermissionDeniedError(
                "a token with management access can only be created by a signed-in user, not with an API token"
            )
        if team_id is not None and team_id not in p.team_ids:
            raise InvalidInputError("a token can only be issued for a team the user belongs to", "not_member")
        if len(self.state.user_tokens_owned(p.user_id)) >= self.max_tokens_per_user:
            raise ConflictError(
                f"token limit reached: a user may hold at most {self.max_tokens_per_user} tokens",
                "token_cap_reached",
            )
        value, token_hash, preview = self._new_value()
        token = Token.issue(
            name,
            token_hash,
            preview,
            p.user_id,
            None,
            team_id,
            user.org_id,
            expires_at,
            self.clock(),
            p.actor,
        )
        if management:
            token.allow_management(actor=p.actor)
        self.commit(token)
        return self._token_answer(str(token.id), value)

    def regenerate_token(
        self, p: Principal, token_id: str, expires_at: datetime | Unset | None = UNSET
    ) -> dict[str, Any]:
        """A new value; with ``expires_at`` also a new expiry (None: never). An expired token needs one:
        a new value that is already expired would be no use."""
        token = self.editable(self.find(self.state.tokens, token_id, "token"))
        self._require_token_manager(p, token, "regenerate this token")
        now = self.clock()
        if not isinstance(expires_at, Unset):
            token.change_expiry(expires_at, now, actor=p.actor)
        elif token.expires_at is not None and token.expires_at <= now:
            raise InvalidInputError(
                f"the token expired at {token.expires_at.isoformat()}: give it a new expiry "
                "(expires_at, or null for none) when regenerating it",
                "token_expired",
            )
        value, token_hash, preview = self._new_value()
        token.regenerate(token_hash, preview, actor=p.actor)
        self.commit(token)
        return self._token_answer(token_id, value)

    def change_token_expiry(self, p: Principal, token_id: str, expires_at: datetime | None) -> dict[str, Any]:
        token = self.editable(self.find(self.state.tokens, token_id, "token"))
        self._require_token_manager(p, token, "change this token's expiry")
        token.change_expiry(expires_at, self.clock(), actor=p.actor)
        self.commit(token)
        return self.token_view(token_id)

    def revoke_token(self, p: Principal, token_id: str) -> None:
        token = self.editable(self.find(self.state.tokens, token_id, "token"))
        self._require_token_manager(p, token, "delete this token")
        token.revoke(actor=p.actor)
        self.commit(token)

    def set_token_limits(self, p: Principal, token_id: str, limits: dict[str, Any]) -> dict[str, Any]:
        token = self.editable(self.find(self.state.tokens, token_id, "token"))
        # Token limits override every other level, so only an Admin may set them.
        p.require_admin("set token limits")
        token.set_limits(clean_limits(limits), actor=p.actor)
        self.commit(token)
        return self.token_view(token_id)

    def list_tokens(self, p: Principal, user_id: str | None = None) -> list[dict[str, Any]]:
        """Own tokens plus the service-account tokens of the caller's teams; with ``user_id`` of
        someone else, that user's personal tokens (for the Org-Admins of their org and Admins)."""
        if user_id is not None and user_id != p.user_id:
            user = self.state.users.get(user_id)  # a deactivated user's tokens too, for their Org-Admins
            if user is None:
                raise NotFoundError(f"user {user_id!r} not found", "user_not_found")
            p.require_org_admin(user.org_id, "see another user's tokens")
            return [self.token_view(str(t.id)) for t in self.state.user_tokens_owned(user_id)]
        tokens = list(self.state.user_tokens_owned(p.user_id))
        for team_id in sorted(p.team_ids):
            for sa in self.state.team_service_accounts(team_id):
                token = self.state.tokens.get(sa.token_id or "")
                if token is not None and not token.revoked:
                    tokens.append(token)
        return [self.token_view(str(t.id)) for t in tokens]

    def get_token(self, p: Principal, token_id: str) -> dict[str, Any]:
        token = self.find(self.state.tokens, token_id, "token")
        if token.service_account_id:
            team = self.state.teams.get(token.team_id or "")
            if team is None or not p.is_member_of(team):
                raise PermissionDeniedError("only members of the team may see this token")
        elif token.user_id != p.user_id and not p.is_org_admin_of(token.org_id):
            raise PermissionDeniedError("only the token's owner may see it")
        return self.token_view(token_id)

    # -- service accounts --------------------------------------------------------------------------

    def create_service_account(
        self, p: Principal, team_id: str, name: str, description: str = ""
    ) -> dict[str, Any]:
        team = self.find(self.state.teams, team_id, "team")
        p.require_team_admin(team, "create service accounts")
        if p.user_id not in team.members:
            raise InvalidInputError(
                "the creator owns the service account, so must be a team member", "not_member"
            )
        name = check_name(name, "name", "the service account's name")
        description = _sa_description(description)
        if len(self.state.team_service_accounts(team_id)) >= self.max_service_accounts_per_team:
            raise ConflictError(
                f"service account limit reached: a team may have at most "
                f"{self.max_service_accounts_per_team} service accounts",
                "service_account_cap_reached",
            )
        sa = ServiceAccount(team_id, team.org_id, name, description, p.user_id, actor=p.actor)
        value, token_hash, preview = self._new_value()
        token = Token.issue(
            name,
            token_hash,
            preview,
            p.user_id,
            str(sa.id),
            team_id,
            team.org_id,
            None,
            self.clock(),
            p.actor,
        )
        sa.attach_token(str(token.id), actor=p.actor)
        self.commit(sa, token)
        return {
            "service_account": service_account_view(self.state.service_accounts[str(sa.id)], self.state),
            **self._token_answer(str(token.id), value),
        }

    def update_service_account(
        self,
        p: Principal,
        sa_id: str,
        name: str | None = None,
        description: str | None = None,
        owner_user_id: str | None = None,
    ) -> dict[str, Any]:
        sa = self.editable(self.find(self.state.service_accounts, sa_id, "service account"))
        team = self.find(self.state.teams, sa.team_id, "team")
        p.require_team_admin(team, "change service accounts")
        changed = []
        new_name = check_name(name, "name", "the service account's name") if name is not None else sa.name
        new_description = _sa_description(description) if description is not None else sa.description
        if (new_name, new_description) != (sa.name, sa.description):
            sa.update(new_name, new_description, actor=p.actor)
        if owner_user_id is not None and owner_user_id != sa.owner_user_id:
            if owner_user_id not in team.members:
                raise InvalidInputError("ownership can only go to a member of the team", "not_member")
            sa.transfer(owner_user_id, actor=p.actor)
            token = self.state.tokens.get(sa.token_id or "")
            if token is not None and not token.revoked:
                token = self.editable(token)
                token.change_owner(owner_user_id, actor=p.actor)
                changed.append(token)
        self.commit(sa, *changed)
        return service_account_view(self.state.service_accounts[sa_id], self.state)

    def delete_service_account(self, p: Principal, sa_id: str) -> None:
        sa = self.editable(self.find(self.state.service_accounts, sa_id, "service account"))
        team = self.find(self.state.teams, sa.team_id, "team")
        p.require_team_admin(team, "delete service accounts")
        sa.delete(actor=p.actor)
        changed = []
        token = self.state.tokens.get(sa.token_id or "")
        if token is not None and not token.revoked:
            token = self.editable(token)
            token.revoke(actor=p.actor)
            changed.append(token)
        self.commit(sa, *changed)

    def list_service_accounts(self, p: Principal, team_id: str) -> list[dict[str, Any]]:
        team = self.find(self.state.teams, team_id, "team")
        if not p.is_member_of(team):
            raise PermissionDeniedError("only members of the team may see its service accounts")
        return [service_account_view(s, self.state) for s in self.state.team_service_accounts(team_id)]
