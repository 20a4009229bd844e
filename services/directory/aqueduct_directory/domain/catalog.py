"""What can be called: endpoints, models, MCP servers; and the terms of service users accept."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from aqueduct_directory.domain.errors import ConflictError

__all__ = ["TOKEN_PRICE_FIELDS", "Endpoint", "McpServer", "Model", "TermsOfService"]

PROVIDERS = ("openai", "anthropic", "azure", "litellm")


def _named_id(kind: str, name: str) -> UUID:
    # Names are the natural keys: a second create of the same name collides in the event store.
    return uuid5(NAMESPACE_URL, f"aqueduct:{kind}:{name}")


class Endpoint(Aggregate):
    """``api_key_env`` names the environment variable holding the credential; the key is never stored.
    ``responses`` tells whether the server has OpenAI's Responses API (else the proxy translates it)."""

    # Class attributes, not annotated fields (the library would make those __init__ arguments), named
    # unlike any event field (whose default the library would take from them): the value of aggregates
    # created before the setting existed.
    responses = True

    @staticmethod
    def create_id(slug: str) -> UUID:
        return _named_id("endpoint", slug)

    @event("EndpointRegistered")
    def __init__(self, slug: str, url: str, provider: str, api_key_env: str | None, actor: str) -> None:
        self.slug = slug
        self.url = url
        self.provider = provider
        self.api_key_env = api_key_env
        self.deleted = False

    @event("EndpointUpdated")
    def update(self, url: str, provider: str, api_key_env: str | None, actor: str) -> None:
        self.url = url
        self.provider = provider
        self.api_key_env = api_key_env
        self.deleted = False

    @event("EndpointResponsesSet")
    def set_responses(self, enabled: bool, actor: str) -> None:
        self.responses = enabled

    @event("EndpointRemoved")
    def remove(self, actor: str) -> None:
        self.deleted = True


# The token classes a model may price apart from input and output (dollars per million tokens, as
# decimal strings): cached input read, cache writes kept 5 minutes and 1 hour, reasoning output.
TOKEN_PRICE_FIELDS = (
    "cached_input_price_per_million",
    "cache_write_price_per_million",
    "cache_write_1h_price_per_million",
    "reasoning_price_per_million",
)


class Model(Aggregate):
    """Prices are decimal strings in dollars per million tokens, as admins write them. ``fallbacks``
    names the models the proxy tries, in order, when this one's upstream fails. ``aliases`` are other
    names clients may use for it (agents send fixed names such as ``claude-sonnet-4-5``);
    ``token_prices`` holds the prices of the token classes in ``TOKEN_PRICE_FIELDS`` that are set."""

    # Class attributes, not annotated fields (the library would make those __init__ arguments), named
    # unlike any event field: the values of models registered before these existed.
    aliases = tuple[str, ...]()
    token_prices = dict[str, str]()  # replaced, never mutated

    @staticmethod
    def create_id(name: str) -> UUID:
        return _named_id("model", name)

    # Stored events change shape through class_version and upcasters (eventsourcing): version 2 of
    # both added ``fallbacks`` (2026-11-22); events recorded before replay with none.
    class ModelRegistered(Aggregate.Created):
        class_version = 2
        name: str
        endpoint: str
        upstream_model: str
        input_price_per_million: str | None
        output_price_per_million: str | None
        fallbacks: list[str]
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["fallbacks"] = []

    class ModelUpdated(Aggregate.Event):
        class_version = 2
        endpoint: str
        upstream_model: str
        input_price_per_million: str | None
        output_price_per_million: str | None
        fallbacks: list[str]
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["fallbacks"] = []

    @event(ModelRegistered)
    def __init__(
        self,
        name: str,
        endpoint: str,
        upstream_model: str,
        input_price_per_million: str | None,
        output_price_per_million: str | None,
        fallbacks: list[str],
        actor: str,
    ) -> None:
        self.name = name
        self.endpoint = endpoint
        self.upstream_model = upstream_model
        self.input_price_per_million = input_price_per_million
        self.output_price_per_million = output_price_per_million
        self.fallbacks = fallbacks
        self.deleted = False

    @event(ModelUpdated)
    def update(
        self,
        endpoint: str,
        upstream_model: str,
        input_price_per_million: str | None,
        output_price_per_million: str | None,
        fallbacks: list[str],
        actor: str,
    ) -> None:
        self.endpoint = endpoint
        self.upstream_model = upstream_model
        self.input_price_per_million = input_price_per_million
        self.output_price_per_million = output_price_per_million
        self.fallbacks = fallbacks
        self.deleted = False

    @event("ModelAliasesSet")
    def set_aliases(self, names: list[str], actor: str) -> None:
        self.aliases = tuple(names)

    @event("ModelTokenPricesSet")
    def set_token_prices(self, prices: dict[str, str], actor: str) -> None:
        self.token_prices = prices

    @event("ModelRemoved")
    def remove(self, actor: str) -> None:
        self.deleted = True


class McpServer(Aggregate):
    """An MCP server the proxy may forward tool calls to, for the listed teams only."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return _named_id("mcp", name)

    # Version 2 of both added ``api_key_env`` (2026-11-22); events recorded before replay without one.
    class McpServerRegistered(Aggregate.Created):
        class_version = 2
        name: str
        url: str
        allowed_team_ids: list[str]
        api_key_env: str | None
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["api_key_env"] = None

    class McpServerUpdated(Aggregate.Event):
        class_version = 2
        url: str
        allowed_team_ids: list[str]
        api_key_env: str | None
        actor: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["api_key_env"] = None

    @event(McpServerRegistered)
    def __init__(
        self, name: str, url: str, allowed_team_ids: list[str], api_key_env: str | None, actor: str
    ) -> None:
        self.name = name
        self.url = url
        self.allowed_team_ids = allowed_team_ids
        self.api_key_env = api_key_env
        self.deleted = False

    @event(McpServerUpdated)
    def update(self, url: str, allowed_team_ids: list[str], api_key_env: str | None, actor: str) -> None:
        self.url = url
        self.allowed_team_ids = allowed_team_ids
        self.api_key_env = api_key_env
        self.deleted = False

    @event("McpServerRemoved")
    def remove(self, actor: str) -> None:
        self.deleted = True


class TermsOfService(Aggregate):
    """The one list of published versions; the last one is current and must be accepted."""

    @staticmethod
    def create_id() -> UUID:
        return _named_id("tos", "terms-of-service")

    @event("TermsOfServiceStarted")
    def __init__(self, actor: str) -> None:
        self.versions: list[dict[str, str]] = []

    def publish(self, version: str, url: str, actor: str) -> None:
        if any(v["version"] == version for v in self.versions):
            raise ConflictError(f"terms of service version {version!r} already exists", "version_exists")
        self._publish(version, url, actor)

    @event("TermsOfServicePublished")
    def _publish(self, version: str, url: str, actor: str) -> None:
        self.versions = [*self.versions, {"version": version, "url": url}]

    @property
    def current(self) -> dict[str, str] | None:
        return self.versions[-1] if self.versions else None
