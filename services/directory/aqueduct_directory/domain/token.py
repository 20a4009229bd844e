"""API tokens and the service accounts that own some of them."""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import Aggregate, event

from aqueduct_directory.domain.errors import InvalidInputError, NotFoundError
from aqueduct_directory.domain.values import as_utc

__all__ = ["ServiceAccount", "Token"]


class Token(Aggregate):
    """Only the keyed hash and a preview are ever recorded; the value lives in one HTTP answer."""

    @classmethod
    def issue(
        cls,
        name: str,
        token_hash: str,
        preview: str,
        user_id: str,
        service_account_id: str | None,
        team_id: str | None,
        org_id: str,
        expires_at: datetime | None,
        now: datetime,
        actor: str,
    ) -> Token:
        if not name.strip():
            raise InvalidInputError("a token needs a name")
        expires_at = as_utc(expires_at) if expires_at is not None else None
        if expires_at is not None and expires_at <= now:
            raise InvalidInputError("expires_at must be in the future (leave it empty for no expiry)")
        return cls(
            name.strip(), token_hash, preview, user_id, service_account_id, team_id, org_id, expires_at, actor
        )

    @event("TokenIssued")
    def __init__(
        self,
        name: str,
        token_hash: str,
        preview: str,
        user_id: str,
        service_account_id: str | None,
        team_id: str | None,
        org_id: str,
        expires_at: datetime | None,
        actor: str,
    ) -> None:
        self.name = name
        self.token_hash = token_hash
        self.preview = preview
        self.user_id = user_id
        self.service_account_id = service_account_id
        self.team_id = team_id
        self.org_id = org_id
        self.expires_at = expires_at
        self.limits: dict[str, int] = {}
        self.revoked = False
        # May act on the management API with its owner's roles (else: as a plain User there).
        self.management = False

    @event("TokenManagementAllowed")
    def allow_management(self, actor: str) -> None:
        self.management = True

    def regenerate(self, token_hash: str, preview: str, actor: str) -> None:
        if self.revoked:
            raise NotFoundError("the token was deleted", "token_not_found")
        self._regenerate(token_hash, preview, actor)

    @event("TokenRegenerated")
    def _regenerate(self, token_hash: str, preview: str, actor: str) -> None:
        self.token_hash = token_hash
        self.preview = preview

    @event("TokenLimitsSet")
    def set_limits(self, limits: dict[str, int], actor: str) -> None:
        self.limits = limits

    def change_expiry(self, expires_at: datetime | None, now: datetime, actor: str) -> None:
        """A new expiry (None: never expires); it must lie in the future."""
        if self.revoked:
            raise NotFoundError("the token was deleted", "token_not_found")
        expires_at = as_utc(expires_at) if expires_at is not None else None
        if expires_at is not None and expires_at <= now:
            raise InvalidInputError(
                "expires_at must be in the future (leave it empty for no expiry)", "expiry_in_past"
            )
        if expires_at != self.expires_at:
            self._change_expiry(expires_at, actor)

    @event("TokenExpiryChanged")
    def _change_expiry(self, expires_at: datetime | None, actor: str) -> None:
        self.expires_at = expires_at

    @event("TokenOwnerChanged")
    def change_owner(self, user_id: str, actor: str) -> None:
        self.user_id = user_id

    def revoke(self, actor: str) -> None:
        if self.revoked:
            raise NotFoundError("the token was deleted", "token_not_found")
        self._revoke(actor)

    @event("TokenRevoked")
    def _revoke(self, actor: str) -> None:
        self.revoked = True

    def is_live(self, at: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or self.expires_at > at)


class ServiceAccount(Aggregate):
    """A team's machine identity: one token, owned (and answered for) by a member of the team."""

    @event("ServiceAccountCreated")
    def __init__(
        self, team_id: str, org_id: str, name: str, description: str, owner_user_id: str, actor: str
    ) -> None:
        self.team_id = team_id
        self.org_id = org_id
        self.name = name
        self.description = description
        self.owner_user_id = owner_user_id
        self.token_id: str | None = None
        self.deleted = False

    @event("ServiceAccountTokenAttached")
    def attach_token(self, token_id: str, actor: str) -> None:
        self.token_id = token_id

    @event("ServiceAccountUpdated")
    def update(self, name: str, description: str, actor: str) -> None:
        self.name = name
        self.description = description

    @event("ServiceAccountOwnershipTransferred")
    def transfer(self, owner_user_id: str, actor: str) -> None:
        self.owner_user_id = owner_user_id

    @event("ServiceAccountDeleted")
    def delete(self, actor: str) -> None:
        self.deleted = True
