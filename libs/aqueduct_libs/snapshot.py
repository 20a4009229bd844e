"""The proxy's auth snapshot: what the directory projects into the ``auth_snapshot`` KV bucket.

The directory computes everything the proxy needs (effective limits, allowed models, expiry, terms of
service) so that the proxy does no lookups on the request path.

Besides one ``TokenGrant`` per API token (key ``token.<hash>``), the directory projects one per active
user (key ``user.<user id>``) with ``token_id = "user:<user id>"`` and ``token_hash = ""``: the user's
effective limits (user > team > org default), allowed models after exclusions and terms-of-service status,
for credentials that identify a user rather than an API token (the proxy's JupyterHub bridge). The key is
deleted when the user is deactivated. It also carries the user's current roles (``roles``, a
``UserRoles``): the auth and accounting services check a session token's holder against them on every
request (``aqueduct_libs.current_roles``), not against the roles written into the token at sign-in.

Budgets are entries of their own (key ``budget.<scope>.<id>``, one per org, team and user that has one): a
changed org budget rewrites one key, not every token of the org. The proxy reserves against them at
admission; accounting reads the same entries to reconcile and decide.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BudgetRule",
    "EndpointRoute",
    "Limits",
    "McpServerRoute",
    "ModelRoute",
    "QuotaDecision",
    "SnapshotMeta",
    "TokenGrant",
    "UserRoles",
]


class Limits(BaseModel):
    """Per-minute limits. ``None`` means unlimited."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    requests_per_minute: int | None = None
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None


class UserRoles(BaseModel):
    """A user's roles as the directory holds them now (on ``user.<id>`` entries only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    admin: bool = False
    org_admin: bool = False  # of the grant's ``org_id``
    team_ids: list[str] = Field(default_factory=list)  # teams the user belongs to
    team_admin_ids: list[str] = Field(default_factory=list)  # teams the user administers


class TokenGrant(BaseModel):
    """Key ``token.<hash>``: one API token and everything the proxy must know to serve it.

    Also key ``user.<user id>``: a user's own grant (``token_id`` ``"user:<id>"``, ``token_hash`` ``""``).
    """

    model_config = ConfigDict(extra="ignore")

    token_id: str
    token_hash: str
    name: str
    user_id: str  # the owning user (for service-account tokens: the service account's owner)
    service_account_id: str | None = None
    team_id: str | None = None
    org_id: str
    expires_at: datetime | None = None
    limits: Limits = Field(default_factory=Limits)  # effective: token > user > team > org default
    model_limits: dict[str, Limits] = Field(default_factory=dict)  # per model name, where set
    allowed_models: list[str] | None = None  # None: every model; otherwise after exclusions
    allowed_mcp_servers: list[str] = Field(default_factory=list)
    tos_accepted: bool = True  # False: the user has not accepted the current terms of service
    tos_url: str | None = None
    # On ``user.<id>`` entries: the user's current roles. None on token entries, and on the user entries
    # of a directory older than this field (readers then grant no role).
    roles: UserRoles | None = None


class EndpointRoute(BaseModel):
    """Key ``endpoint.<slug>``: where an endpoint lives and how to authenticate to it."""

    model_config = ConfigDict(extra="ignore")

    slug: str
    url: str  # base URL including /v1 where the provider has it, e.g. http://vllm:8000/v1
    provider: Literal["openai", "anthropic", "azure", "litellm"] = "openai"
    api_key_env: str | None = None  # name of the environment variable holding the key, never the key
    # Whether the server has OpenAI's Responses API (/responses); false: the proxy translates
    # /v1/responses into chat completions (local vLLM, Ollama, llama.cpp servers). Only for "openai".
    responses: bool = True


class ModelRoute(BaseModel):
    """Key ``model.<name>``: a model name clients use, and where it is served."""

    model_config = ConfigDict(extra="ignore")

    name: str
    endpoint: str  # endpoint slug
    upstream_model: str  # the model id the upstream knows
    input_price_nanos_per_token: int | None = None  # integer nano-dollars per token
    output_price_nanos_per_token: int | None = None
    fallbacks: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)  # other names clients may use for this model
    # Prices of the other token classes where the model sets them (None: derived, see accounting).
    cached_input_price_nanos_per_token: int | None = None
    cache_write_price_nanos_per_token: int | None = None  # cache writes kept 5 minutes
    cache_write_1h_price_nanos_per_token: int | None = None
    reasoning_price_nanos_per_token: int | None = None


class McpServerRoute(BaseModel):
    """Key ``mcp.<name>``: a registered MCP server and the teams that may use it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    url: str  # the server's streamable HTTP endpoint, e.g. http://tools:9000/mcp
    allowed_team_ids: list[str] = Field(default_factory=list)  # empty: no team may use it
    api_key_env: str | None = None  # env var holding a credential to send upstream, never the value


class BudgetRule(BaseModel):
    """Key ``budget.<scope>.<id>``: the budgets one org, team or user has, per UTC day and calendar month
    (UTC), in dollars (integer nano-dollars) and in tokens (input + output). ``None``: no such budget."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    scope: Literal["user", "team", "org"]
    scope_id: str
    # The org's, team's or user's name, for the messages that name the budget ("" from a directory
    # older than this field: they name the id alone).
    name: str = ""
    daily_nanos: int | None = None
    monthly_nanos: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    @property
    def is_empty(self) -> bool:
        return all(
            v is None for v in (self.daily_nanos, self.monthly_nanos, self.daily_tokens, self.monthly_tokens)
        )


class SnapshotMeta(BaseModel):
    """Key ``meta``: the directory notification id the snapshot reflects."""

    notification_id: int
    written_at: datetime


class QuotaDecision(BaseModel):
    """Quota bucket, keys ``user.<id>``, ``team.<id>``, ``org.<id>``: a budget is used up."""

    model_config = ConfigDict(extra="ignore")

    scope: Literal["user", "team", "org"]
    scope_id: str
    budget: str  # human-readable name, e.g. "team daily budget of $5.00"
    period: Literal["day", "month"]
    until: datetime  # when the decision lifts on its own (end of the period)
    decided_at: datetime
