"""Request bodies of the HTTP API (answers are the application's plain views)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "EndpointIn",
    "EndpointPatch",
    "McpServerIn",
    "McpServerPatch",
    "MemberIn",
    "ModelIn",
    "ModelPatch",
    "OrgIn",
    "OrgPatch",
    "ServiceAccountIn",
    "ServiceAccountPatch",
    "TeamIn",
    "TeamPatch",
    "TermsAcceptIn",
    "TermsIn",
    "TokenIn",
    "TokenPatch",
    "TokenRegenerateIn",
    "UserIn",
    "UserPatch",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgIn(_Body):
    name: str
    sso_group: str | None = None
    limits: dict[str, Any] | None = None
    budgets: dict[str, Any] | None = None


class OrgPatch(_Body):
    name: str | None = None
    sso_group: str | None = None
    limits: dict[str, Any] | None = None
    budgets: dict[str, Any] | None = None
    excluded_models: list[str] | None = None
    model_limits: dict[str, dict[str, Any]] | None = None
    default_team_id: str | None = None


class TeamIn(_Body):
    org_id: str
    name: str
    description: str = ""
    limits: dict[str, Any] | None = None


class TeamPatch(_Body):
    name: str | None = None
    description: str | None = None
    limits: dict[str, Any] | None = None
    budgets: dict[str, Any] | None = None
    excluded_models: list[str] | None = None
    model_limits: dict[str, dict[str, Any]] | None = None


class MemberIn(_Body):
    user_id: str
    team_admin: bool = False


class UserIn(_Body):
    email: str
    name: str = ""
    org_id: str
    org_admin: bool = False
    admin: bool = False


class UserPatch(_Body):
    name: str | None = None
    email: str | None = None
    limits: dict[str, Any] | None = None
    budgets: dict[str, Any] | None = None
    excluded_models: list[str] | None = None
    model_limits: dict[str, dict[str, Any]] | None = None
    org_admin: bool | None = None
    admin: bool | None = None


class TokenIn(_Body):
    name: str
    expires_at: datetime | None = None
    team_id: str | None = None
    # Also act on the management API with the owner's roles (only a signed-in user may ask for it).
    management: bool = False


class TokenPatch(_Body):
    limits: dict[str, Any] | None = None  # Admins only
    expires_at: datetime | None = None  # null: never expires; absent: unchanged


class TokenRegenerateIn(_Body):
    expires_at: datetime | None = None  # null: never expires; absent: unchanged


class ServiceAccountIn(_Body):
    name: str
    description: str = ""


class ServiceAccountPatch(_Body):
    name: str | None = None
    description: str | None = None
    owner_user_id: str | None = None


class EndpointIn(_Body):
    slug: str
    url: str
    provider: str = "openai"
    api_key_env: str | None = None
    responses: bool = True  # the server has OpenAI's Responses API; false: the proxy translates it


class EndpointPatch(_Body):
    url: str | None = None
    provider: str | None = None
    api_key_env: str | None = None
    responses: bool | None = None


class ModelIn(_Body):
    name: str
    endpoint: str
    upstream_model: str | None = None
    input_price_per_million: float | str | None = None
    output_price_per_million: float | str | None = None
    fallbacks: list[str] | None = None
    aliases: list[str] | None = None  # other names clients may use for this model
    cached_input_price_per_million: float | str | None = None
    cache_write_price_per_million: float | str | None = None  # cache writes kept 5 minutes
    cache_write_1h_price_per_million: float | str | None = None
    reasoning_price_per_million: float | str | None = None


class ModelPatch(_Body):
    endpoint: str | None = None
    upstream_model: str | None = None
    input_price_per_million: float | str | None = None
    output_price_per_million: float | str | None = None
    fallbacks: list[str] | None = None
    aliases: list[str] | None = None
    cached_input_price_per_million: float | str | None = None
    cache_write_price_per_million: float | str | None = None
    cache_write_1h_price_per_million: float | str | None = None
    reasoning_price_per_million: float | str | None = None


class McpServerIn(_Body):
    name: str
    url: str
    allowed_team_ids: list[str] = []
    api_key_env: str | None = None


class McpServerPatch(_Body):
    url: str | None = None
    allowed_team_ids: list[str] | None = None
    api_key_env: str | None = None


class TermsIn(_Body):
    version: str
    url: str


class TermsAcceptIn(_Body):
    version: str
