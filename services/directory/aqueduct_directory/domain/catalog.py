"""What can be called: endpoints, models, MCP servers; and the terms of service users accept."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from aqueduct_directory.domain.errors import ConflictError

__all__ = ["Endpoint", "McpServer", "Model", "TermsOfService"]

PROVIDERS = ("openai", "anthropic", "azure", "litellm")


def _named_id(kind: str, name: str) -> UUID:
    # Names are the natural keys: a second create of the same name collides in the event store.
    return uuid5(NAMESPACE_URL, f"aqueduct:{kind}:{name}")


class Endpoint(Aggregate):
    """``api_key_env`` names the environment variable holding the credential; the key is never stored."""

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

    @event("EndpointRemoved")
    def remove(self, actor: str) -> None:
        self.deleted = True


class Model(Aggregate):
    """Prices are decimal strings in dollars per million tokens, as admins write them. ``fallbacks``
    names the models the proxy tries, in order, when this one's upstream fails."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return _named_id("model", name)

    @event("ModelRegistered")
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

    @event("ModelUpdated")
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

    @event("ModelRemoved")
    def remove(self, actor: str) -> None:
        self.deleted = True


class McpServer(Aggregate):
    """An MCP server the proxy may forward tool calls to, for the listed teams only."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return _named_id("mcp", name)

    @event("McpServerRegistered")
    def __init__(
        self, name: str, url: str, allowed_team_ids: list[str], api_key_env: str | None, actor: str
    ) -> None:
        self.name = name
        self.url = url
        self.allowed_team_ids = allowed_team_ids
        self.api_key_env = api_key_env
        self.deleted = False

    @event("McpServerUpdated")
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
