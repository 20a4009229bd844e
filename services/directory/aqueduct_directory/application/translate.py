"""Stored domain events -> the public ``DirectoryEvent`` contract (kept apart on purpose).

Each stored event class has one explicit translation into its model in ``aqueduct_libs.directory_events``:
which public field is filled from which attribute of the stored event, and which attributes are kept
back. Renaming a field of a stored event therefore cannot change what is published: the translation no
longer finds the attribute and fails (the tests translate every event class), and a field added to a
stored event is published only once it is added here and to the model. An event class without a
translation cannot be published (``UntranslatedEventError``); a test lists every class of the domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from aqueduct_directory.domain import (
    Endpoint,
    McpServer,
    Model,
    Org,
    ServiceAccount,
    Team,
    TermsOfService,
    Token,
    User,
)
from aqueduct_libs import directory_events as public
from aqueduct_libs.events import DirectoryEvent

__all__ = ["TRANSLATIONS", "Translation", "UntranslatedEventError", "to_integration_event", "to_plain"]


def to_plain(value: Any) -> Any:
    """A value as it appears in an event's JSON (ids, times and amounts as strings)."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    return value


class UntranslatedEventError(LookupError):
    """A stored event class has no translation into the public contract."""


@dataclass(frozen=True)
class Translation:
    """``fields``: public field -> attribute of the stored event. ``withheld``: attributes of the stored
    event that are not published, on purpose (``actor`` and the library's bookkeeping go in the
    envelope and are never listed)."""

    model: type[public.DirectoryEventData]
    fields: dict[str, str]
    withheld: frozenset[str] = field(default_factory=frozenset)

    def __call__(self, domain_event: Any) -> public.DirectoryEventData:
        return self.model.model_validate(
            {public_name: to_plain(getattr(domain_event, attr)) for public_name, attr in self.fields.items()}
        )


def _to(model: type[public.DirectoryEventData], *same_names: str, **renamed: str) -> Translation:
    """A translation whose public fields are ``same_names`` (same attribute name) and ``renamed``
    (public name=attribute name)."""
    return Translation(model, {**{n: n for n in same_names}, **renamed})


# (aggregate class, stored event class name) -> its translation. Class names, not classes: the library
# creates the event classes from the decorated methods, and a renamed class must fail here, at import.
_BY_NAME: dict[tuple[type[Aggregate], str], Translation] = {
    (Org, "OrgCreated"): _to(public.OrgCreated, "name", "sso_group", "limits", "budgets"),
    (Org, "OrgUpdated"): _to(public.OrgUpdated, "name", "sso_group"),
    (Org, "OrgDefaultTeamSet"): _to(public.OrgDefaultTeamSet, "team_id"),
    (Org, "OrgLimitsSet"): _to(public.OrgLimitsSet, "limits"),
    (Org, "OrgBudgetsSet"): _to(public.OrgBudgetsSet, "budgets"),
    (Org, "OrgModelsExcluded"): _to(public.OrgModelsExcluded, "excluded_models"),
    (Org, "OrgModelLimitsSet"): _to(public.OrgModelLimitsSet, "model_limits"),
    (Team, "TeamCreated"): _to(public.TeamCreated, "org_id", "name", "description", "limits"),
    (Team, "TeamUpdated"): _to(public.TeamUpdated, "name", "description"),
    (Team, "TeamLimitsSet"): _to(public.TeamLimitsSet, "limits"),
    (Team, "TeamBudgetsSet"): _to(public.TeamBudgetsSet, "budgets"),
    (Team, "TeamModelsExcluded"): _to(public.TeamModelsExcluded, "excluded_models"),
    (Team, "TeamModelLimitsSet"): _to(public.TeamModelLimitsSet, "model_limits"),
    (Team, "MemberAdded"): _to(public.MemberAdded, "user_id", "team_admin", "joined_at"),
    (Team, "MemberRemoved"): _to(public.MemberRemoved, "user_id"),
    (Team, "MemberPromoted"): _to(public.MemberPromoted, "user_id"),
    (Team, "MemberDemoted"): _to(public.MemberDemoted, "user_id"),
    (Team, "TeamDeleted"): _to(public.TeamDeleted),
    (User, "UserRegistered"): _to(
        public.UserRegistered, "org_id", "email", "name", "subject", "admin", "org_admin"
    ),
    (User, "UserProfileUpdated"): _to(public.UserProfileUpdated, "name", "email"),
    (User, "UserSubjectLinked"): _to(public.UserSubjectLinked, "subject"),
    (User, "UserRolesChanged"): _to(public.UserRolesChanged, "admin", "org_admin"),
    (User, "UserAdminSetAtSignIn"): _to(public.UserAdminSetAtSignIn, "admin"),
    (User, "UserLimitsSet"): _to(public.UserLimitsSet, "limits"),
    (User, "UserBudgetsSet"): _to(public.UserBudgetsSet, "budgets"),
    (User, "UserModelsExcluded"): _to(public.UserModelsExcluded, "excluded_models"),
    (User, "UserModelLimitsSet"): _to(public.UserModelLimitsSet, "model_limits"),
    (User, "TermsAccepted"): _to(public.TermsAccepted, "version"),
    (User, "UserDeactivated"): _to(public.UserDeactivated),
    (User, "UserReactivated"): _to(public.UserReactivated),
    (Token, "TokenIssued"): _to(
        public.TokenIssued,
        "name",
        "token_hash",
        "preview",
        "user_id",
        "service_account_id",
        "team_id",
        "org_id",
        "expires_at",
    ),
    (Token, "TokenManagementAllowed"): _to(public.TokenManagementAllowed),
    (Token, "TokenRegenerated"): _to(public.TokenRegenerated, "token_hash", "preview"),
    (Token, "TokenLimitsSet"): _to(public.TokenLimitsSet, "limits"),
    (Token, "TokenExpiryChanged"): _to(public.TokenExpiryChanged, "expires_at"),
    (Token, "TokenOwnerChanged"): _to(public.TokenOwnerChanged, "user_id"),
    (Token, "TokenRevoked"): _to(public.TokenRevoked),
    (ServiceAccount, "ServiceAccountCreated"): _to(
        public.ServiceAccountCreated, "team_id", "org_id", "name", "description", "owner_user_id"
    ),
    (ServiceAccount, "ServiceAccountTokenAttached"): _to(public.ServiceAccountTokenAttached, "token_id"),
    (ServiceAccount, "ServiceAccountUpdated"): _to(public.ServiceAccountUpdated, "name", "description"),
    (ServiceAccount, "ServiceAccountOwnershipTransferred"): _to(
        public.ServiceAccountOwnershipTransferred, "owner_user_id"
    ),
    (ServiceAccount, "ServiceAccountDeleted"): _to(public.ServiceAccountDeleted),
    (Endpoint, "EndpointRegistered"): _to(
        public.EndpointRegistered, "slug", "url", "provider", "api_key_env"
    ),
    (Endpoint, "EndpointUpdated"): _to(public.EndpointUpdated, "url", "provider", "api_key_env"),
    (Endpoint, "EndpointResponsesSet"): _to(public.EndpointResponsesSet, "enabled"),
    (Endpoint, "EndpointRemoved"): _to(public.EndpointRemoved),
    (Model, "ModelRegistered"): _to(
        public.ModelRegistered,
        "name",
        "endpoint",
        "upstream_model",
        "input_price_per_million",
        "output_price_per_million",
        "fallbacks",
    ),
    (Model, "ModelUpdated"): _to(
        public.ModelUpdated,
        "endpoint",
        "upstream_model",
        "input_price_per_million",
        "output_price_per_million",
        "fallbacks",
    ),
    (Model, "ModelAliasesSet"): _to(public.ModelAliasesSet, "names"),
    (Model, "ModelTokenPricesSet"): _to(public.ModelTokenPricesSet, "prices"),
    (Model, "ModelRemoved"): _to(public.ModelRemoved),
    (McpServer, "McpServerRegistered"): _to(
        public.McpServerRegistered, "name", "url", "allowed_team_ids", "api_key_env"
    ),
    (McpServer, "McpServerUpdated"): _to(public.McpServerUpdated, "url", "allowed_team_ids", "api_key_env"),
    (McpServer, "McpServerRemoved"): _to(public.McpServerRemoved),
    (TermsOfService, "TermsOfServiceStarted"): _to(public.TermsOfServiceStarted),
    (TermsOfService, "TermsOfServicePublished"): _to(public.TermsOfServicePublished, "version", "url"),
}

# Stored event class -> its translation.
TRANSLATIONS: dict[type, Translation] = {
    getattr(aggregate, name): translation for (aggregate, name), translation in _BY_NAME.items()
}


def to_integration_event(domain_event: Any, notification_id: int) -> DirectoryEvent:
    """Token values are never in a stored event, nor in a model, so nothing secret can leak here."""
    translation = TRANSLATIONS.get(type(domain_event))
    if translation is None:
        raise UntranslatedEventError(f"no public translation of {type(domain_event).__qualname__}")
    payload = translation(domain_event)
    return DirectoryEvent(
        notification_id=notification_id,
        type=payload.event_type,
        version=payload.event_version,
        aggregate_type=payload.aggregate_type,
        aggregate_id=str(domain_event.originator_id),
        aggregate_version=domain_event.originator_version,
        actor=getattr(domain_event, "actor", "system"),
        occurred_at=domain_event.timestamp,
        data=payload.model_dump(mode="json"),
    )
