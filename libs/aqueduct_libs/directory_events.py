"""The directory's integration events: one model per published event type and version.

``DirectoryEvent.data`` holds one of these (``DirectoryEvent.payload()`` parses it, upcast to the newest
version of its type). The directory builds them from its stored domain events with an explicit mapping
per event class (``aqueduct_directory.application.translate``); they are the public contract, the stored
events are not. Rules (``docs/contracts.md``): within a version a model only gains optional fields; any
other change is a new version with an upcaster (``aqueduct_libs.event_versions``); a fixture of every
published version is kept in ``libs/tests/fixtures/directory_events/`` and must keep parsing. No model
carries a token value, a password or a key: tokens appear as their keyed hash and preview only, and
upstream credentials as the name of the environment variable that holds them (``api_key_env``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, PlainSerializer

from aqueduct_libs.event_versions import EventModel, EventRegistry

__all__ = ["DIRECTORY_EVENTS", "DirectoryEventData", "parse_directory_event"]

DIRECTORY_EVENTS = EventRegistry()
_event = DIRECTORY_EVENTS.model

# Times as the directory has always written them (``datetime.isoformat()``: "+00:00", not "Z").
Time = Annotated[AwareDatetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")]
Limits = dict[
    str, int
]  # requests_per_minute, input_tokens_per_minute, output_tokens_per_minute: set ones only
ModelLimits = dict[str, Limits]  # model name -> its limits
Budgets = dict[str, str | int]  # daily_usd, monthly_usd (decimal strings); daily_tokens, monthly_tokens


class DirectoryEventData(EventModel):
    """Base of the directory's event models; ``aggregate_type`` is the envelope's."""

    aggregate_type: ClassVar[str]


def parse_directory_event(event_type: str, version: int, data: dict[str, object]) -> DirectoryEventData:
    """``data`` of the given type and version as the newest model of its type (upcast)."""
    parsed = DIRECTORY_EVENTS.parse(event_type, version, data)
    assert isinstance(parsed, DirectoryEventData)
    return parsed


# -- orgs ------------------------------------------------------------------------------------------


class _OrgEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "Org"


@_event
class OrgCreated(_OrgEvent):
    name: str
    sso_group: str | None = None
    limits: Limits = {}
    budgets: Budgets = {}


@_event
class OrgUpdated(_OrgEvent):
    name: str
    sso_group: str | None = None


@_event
class OrgDefaultTeamSet(_OrgEvent):
    """New users join this team on their first sign-in (None: none)."""

    team_id: str | None = None


@_event
class OrgLimitsSet(_OrgEvent):
    limits: Limits


@_event
class OrgBudgetsSet(_OrgEvent):
    budgets: Budgets


@_event
class OrgModelsExcluded(_OrgEvent):
    excluded_models: list[str]


@_event
class OrgModelLimitsSet(_OrgEvent):
    model_limits: ModelLimits


# -- teams -----------------------------------------------------------------------------------------


class _TeamEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "Team"


@_event
class TeamCreated(_TeamEvent):
    org_id: str
    name: str
    description: str = ""
    limits: Limits = {}


@_event
class TeamUpdated(_TeamEvent):
    name: str
    description: str = ""


@_event
class TeamLimitsSet(_TeamEvent):
    limits: Limits


@_event
class TeamBudgetsSet(_TeamEvent):
    budgets: Budgets


@_event
class TeamModelsExcluded(_TeamEvent):
    excluded_models: list[str]


@_event
class TeamModelLimitsSet(_TeamEvent):
    model_limits: ModelLimits


@_event
class MemberAdded(_TeamEvent):
    user_id: str
    team_admin: bool = False
    joined_at: Time


@_event
class MemberRemoved(_TeamEvent):
    user_id: str


@_event
class MemberPromoted(_TeamEvent):
    """The member became a Team-Admin."""

    user_id: str


@_event
class MemberDemoted(_TeamEvent):
    """The member is no longer a Team-Admin."""

    user_id: str


@_event
class TeamDeleted(_TeamEvent):
    pass


# -- users -----------------------------------------------------------------------------------------


class _UserEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "User"


@_event
class UserRegistered(_UserEvent):
    org_id: str
    email: str
    name: str
    subject: str | None = None  # "local:<username>", "oidc:<issuer>:<sub>", ...
    admin: bool = False
    org_admin: bool = False


@_event
class UserProfileUpdated(_UserEvent):
    name: str
    email: str


@_event
class UserSubjectLinked(_UserEvent):
    subject: str


@_event
class UserRolesChanged(_UserEvent):
    admin: bool
    org_admin: bool


@_event
class UserAdminSetAtSignIn(_UserEvent):
    """The identity provider's groups granted Admin at a sign-in (or took back one they had granted)."""

    admin: bool


@_event
class UserLimitsSet(_UserEvent):
    limits: Limits


@_event
class UserBudgetsSet(_UserEvent):
    budgets: Budgets


@_event
class UserModelsExcluded(_UserEvent):
    excluded_models: list[str]


@_event
class UserModelLimitsSet(_UserEvent):
    model_limits: ModelLimits


@_event
class TermsAccepted(_UserEvent):
    version: str  # the terms of service version accepted


@_event
class UserDeactivated(_UserEvent):
    pass


@_event
class UserReactivated(_UserEvent):
    pass


# -- API tokens and service accounts ---------------------------------------------------------------


class _TokenEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "Token"


@_event
class TokenIssued(_TokenEvent):
    """Never the value: its keyed hash (HMAC with the secret key) and the preview shown in lists."""

    name: str
    token_hash: str
    preview: str
    user_id: str
    service_account_id: str | None = None
    team_id: str | None = None
    org_id: str
    expires_at: Time | None = None


@_event
class TokenManagementAllowed(_TokenEvent):
    """The token acts on the management API with its owner's roles."""


@_event
class TokenRegenerated(_TokenEvent):
    token_hash: str
    preview: str


@_event
class TokenLimitsSet(_TokenEvent):
    limits: Limits


@_event
class TokenExpiryChanged(_TokenEvent):
    expires_at: Time | None = None  # None: never expires


@_event
class TokenOwnerChanged(_TokenEvent):
    user_id: str


@_event
class TokenRevoked(_TokenEvent):
    pass


class _ServiceAccountEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "ServiceAccount"


@_event
class ServiceAccountCreated(_ServiceAccountEvent):
    team_id: str
    org_id: str
    name: str
    description: str = ""
    owner_user_id: str


@_event
class ServiceAccountTokenAttached(_ServiceAccountEvent):
    token_id: str


@_event
class ServiceAccountUpdated(_ServiceAccountEvent):
    name: str
    description: str = ""


@_event
class ServiceAccountOwnershipTransferred(_ServiceAccountEvent):
    owner_user_id: str


@_event
class ServiceAccountDeleted(_ServiceAccountEvent):
    pass


# -- the catalogue ---------------------------------------------------------------------------------


class _EndpointEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "Endpoint"


@_event
class EndpointRegistered(_EndpointEvent):
    slug: str
    url: str
    provider: str  # "openai", "anthropic", "azure", "litellm"
    api_key_env: str | None = None  # the variable's name; the key itself is never recorded


@_event
class EndpointUpdated(_EndpointEvent):
    url: str
    provider: str
    api_key_env: str | None = None


@_event
class EndpointResponsesSet(_EndpointEvent):
    """Whether the server has OpenAI's Responses API (else the proxy translates it)."""

    enabled: bool


@_event
class EndpointRemoved(_EndpointEvent):
    pass


class _ModelEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "Model"


@_event
class ModelRegistered(_ModelEvent):
    """Prices are decimal strings in dollars per million tokens. ``fallbacks`` was added within v1
    (2026-11-22): older events have none."""

    name: str
    endpoint: str
    upstream_model: str
    input_price_per_million: str | None = None
    output_price_per_million: str | None = None
    fallbacks: list[str] = []


@_event
class ModelUpdated(_ModelEvent):
    endpoint: str
    upstream_model: str
    input_price_per_million: str | None = None
    output_price_per_million: str | None = None
    fallbacks: list[str] = []


@_event
class ModelAliasesSet(_ModelEvent):
    names: list[str]  # the other names clients may call the model by


@_event
class ModelTokenPricesSet(_ModelEvent):
    # cached_input_price_per_million, cache_write_price_per_million, cache_write_1h_price_per_million,
    # reasoning_price_per_million: the ones set, as decimal strings
    prices: dict[str, str]


@_event
class ModelRemoved(_ModelEvent):
    pass


class _McpServerEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "McpServer"


@_event
class McpServerRegistered(_McpServerEvent):
    """``api_key_env`` was added within v1 (2026-11-22): older events have none."""

    name: str
    url: str
    allowed_team_ids: list[str] = []
    api_key_env: str | None = None


@_event
class McpServerUpdated(_McpServerEvent):
    url: str
    allowed_team_ids: list[str] = []
    api_key_env: str | None = None


@_event
class McpServerRemoved(_McpServerEvent):
    pass


class _TermsEvent(DirectoryEventData):
    aggregate_type: ClassVar[str] = "TermsOfService"


@_event
class TermsOfServiceStarted(_TermsEvent):
    pass


@_event
class TermsOfServicePublished(_TermsEvent):
    version: str
    url: str
