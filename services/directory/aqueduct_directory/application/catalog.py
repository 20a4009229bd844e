"""Use cases on endpoints, models, MCP servers and terms of service (all Admin-only to change)."""

from __future__ import annotations

import re
from typing import Any

from aqueduct_directory.application.base import DirectoryCore
from aqueduct_directory.application.views import endpoint_view, mcp_view, model_view
from aqueduct_directory.domain.catalog import (
    PROVIDERS,
    TOKEN_PRICE_FIELDS,
    Endpoint,
    McpServer,
    Model,
    TermsOfService,
)
from aqueduct_directory.domain.errors import ConflictError, InvalidFieldError
from aqueduct_directory.domain.inputs import (
    check_mcp_name,
    check_model_name,
    check_name,
    check_slug,
    check_url,
)
from aqueduct_directory.domain.policy import Principal
from aqueduct_directory.domain.values import clean_price

__all__ = ["CatalogUseCases"]


def _provider(value: str | None) -> str:
    provider = value or "openai"
    if provider not in PROVIDERS:
        raise InvalidFieldError("provider", f"the provider must be one of {', '.join(PROVIDERS)}")
    return provider


def _endpoint_url(value: str | None) -> str:
    return check_url(value, "url", "the endpoint URL")


def _mcp_url(value: str | None) -> str:
    return check_url(value, "url", "the MCP server URL")


_MAX_FALLBACKS = 10


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEAVE: Any = object()  # a price not given is left as it is; None removes it


def _key_env(value: str | None) -> str | None:
    """The name of the variable holding an upstream credential, which the proxy sends upstream.

    The gateway's own settings (``AQUEDUCT_*``: the token-hash key, database and Valkey URLs) must never
    become an upstream credential, or an Admin could have the proxy send them to a server of theirs.
    """
    if not value:
        return None
    if not _ENV_NAME.fullmatch(value) or len(value) > 200:
        raise InvalidFieldError("api_key_env", f"must be an environment variable name, not {value!r}")
    if value.upper().startswith("AQUEDUCT_"):
        raise InvalidFieldError("api_key_env", "may not name one of the gateway's own AQUEDUCT_* settings")
    return value


MAX_ALIASES = 50
_ALIAS = re.compile(r"[A-Za-z0-9._:/@-]{1,200}")


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidFieldError(what, f"{what} must be true or false")
    return value


def _token_prices(current: dict[str, str], *given: Any) -> dict[str, str]:
    """The token-class prices after a change: a price not given stays, ``None`` removes it."""
    prices = dict(current)
    for field, value in zip(TOKEN_PRICE_FIELDS, given, strict=True):
        if value is _LEAVE:
            continue
        cleaned = clean_price(value, field)
        if cleaned is None:
            prices.pop(field, None)
        else:
            prices[field] = cleaned
    return prices


def _upstream(value: str | None) -> str | None:
    return check_model_name(value, "upstream_model", "the upstream model name") if value else None


def _price(value: Any, which: str) -> str | None:
    return clean_price(value, f"{which}_price_per_million")


class CatalogUseCases(DirectoryCore):
    # -- endpoints ---------------------------------------------------------------------------------

    def register_endpoint(
        self,
        p: Principal,
        slug: str,
        url: str,
        provider: str = "openai",
        api_key_env: str | None = None,
        responses: bool = True,
    ) -> dict[str, Any]:
        p.require_admin("register endpoints")
        slug, url, provider = check_slug(slug), _endpoint_url(url), _provider(provider)
        api_key_env = _key_env(api_key_env)
        existing = self.state.endpoints.get(slug)
        if existing is not None and not existing.deleted:
            raise ConflictError(f"endpoint {slug!r} exists", "endpoint_exists")
        if existing is not None:  # a removed slug comes back as the same aggregate
            endpoint = self.editable(existing)
            endpoint.update(url, provider, api_key_env or None, actor=p.actor)
        else:
            endpoint = Endpoint(slug, url, provider, api_key_env or None, actor=p.actor)
        if endpoint.responses != _flag(responses, "responses"):
            endpoint.set_responses(responses, actor=p.actor)
        self.commit(endpoint)
        return endpoint_view(self.state.endpoints[slug])

    def update_endpoint(
        self,
        p: Principal,
        slug: str,
        url: str | None = None,
        provider: str | None = None,
        api_key_env: str | None = None,
        responses: bool | None = None,
    ) -> dict[str, Any]:
        p.require_admin("change endpoints")
        endpoint = self.editable(self.find(self.state.endpoints, slug, "endpoint"))
        new = (
            _endpoint_url(url) if url is not None else endpoint.url,
            _provider(provider) if provider is not None else endpoint.provider,
            _key_env(api_key_env) if api_key_env is not None else endpoint.api_key_env,
        )
        changed = False
        if new != (endpoint.url, endpoint.provider, endpoint.api_key_env):
            endpoint.update(*new, actor=p.actor)
            changed = True
        if responses is not None and _flag(responses, "responses") != endpoint.responses:
            endpoint.set_responses(responses, actor=p.actor)
            changed = True
        if changed:
            self.commit(endpoint)
        return endpoint_view(self.state.endpoints[slug])

    def remove_endpoint(self, p: Principal, slug: str) -> None:
        p.require_admin("remove endpoints")
        endpoint = self.editable(self.find(self.state.endpoints, slug, "endpoint"))
        in_use = sorted(m.name for m in self.state.models.values() if not m.deleted and m.endpoint == slug)
        if in_use:
            raise ConflictError(f"models still use this endpoint: {', '.join(in_use)}", "endpoint_in_use")
        endpoint.remove(actor=p.actor)
        self.commit(endpoint)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [endpoint_view(e) for _, e in sorted(self.state.endpoints.items()) if not e.deleted]

    # -- models ------------------------------------------------------------------------------------

    def register_model(
        self,
        p: Principal,
        name: str,
        endpoint: str,
        upstream_model: str | None = None,
        input_price_per_million: Any = None,
        output_price_per_million: Any = None,
        fallbacks: list[str] | None = None,
        aliases: list[str] | None = None,
        cached_input_price_per_million: Any = None,
        cache_write_price_per_million: Any = None,
        cache_write_1h_price_per_million: Any = None,
        reasoning_price_per_million: Any = None,
    ) -> dict[str, Any]:
        p.require_admin("register models")
        name = check_model_name(name)
        if self._alias_owner(name) is not None:
            raise ConflictError(
                f"{name!r} is an alias of the model {self._alias_owner(name)!r}", "alias_taken"
            )
        self.find(self.state.endpoints, endpoint, "endpoint")
        wanted_aliases = self._aliases(name, aliases or [])
        prices = _token_prices(
            {}, cached_input_price_per_million, cache_write_price_per_million,
            cache_write_1h_price_per_million, reasoning_price_per_million,
        )  # fmt: skip
        values = (endpoint, _upstream(upstream_model) or name, _price(input_price_per_million, "input"),
                  _price(output_price_per_million, "output"), self._fallbacks(name, fallbacks))  # fmt: skip
        existing = self.state.models.get(name)
        if existing is not None and not existing.deleted:
            raise ConflictError(f"model {name!r} exists", "model_exists")
        if existing is not None:
            model = self.editable(existing)
            model.update(*values, actor=p.actor)
        else:
            model = Model(name, *values, actor=p.actor)
        if list(model.aliases) != wanted_aliases:
            model.set_aliases(wanted_aliases, actor=p.actor)
        if model.token_prices != prices:
            model.set_token_prices(prices, actor=p.actor)
        self.commit(model)
        return model_view(self.state.models[name])

    def update_model(
        self,
        p: Principal,
        name: str,
        endpoint: str | None = None,
        upstream_model: str | None = None,
        input_price_per_million: Any = _LEAVE,
        output_price_per_million: Any = _LEAVE,
        fallbacks: list[str] | None = None,
        aliases: list[str] | None = None,
        cached_input_price_per_million: Any = _LEAVE,
        cache_write_price_per_million: Any = _LEAVE,
        cache_write_1h_price_per_million: Any = _LEAVE,
        reasoning_price_per_million: Any = _LEAVE,
    ) -> dict[str, Any]:
        """Prices: left as they are unless given; ``None`` removes a price (the model's cost is then
        unknown), as an explicit JSON ``null`` in ``PATCH /api/models/{name}`` does."""
        p.require_admin("change models")
        model = self.editable(self.find(self.state.models, name, "model"))
        if endpoint is not None:
            self.find(self.state.endpoints, endpoint, "endpoint")
        new = (
            endpoint or model.endpoint,
            _upstream(upstream_model) or model.upstream_model,
            _price(input_price_per_million, "input") if input_price_per_million is not _LEAVE
            else model.input_price_per_million,
            _price(output_price_per_million, "output") if output_price_per_million is not _LEAVE
            else model.output_price_per_million,
            self._fallbacks(name, fallbacks) if fallbacks is not None else model.fallbacks,
        )  # fmt: skip
        current = (model.endpoint, model.upstream_model, model.input_price_per_million,
                   model.output_price_per_million, model.fallbacks)  # fmt: skip
        changed = False
        if new != current:
            model.update(*new, actor=p.actor)
            changed = True
        if aliases is not None and (wanted := self._aliases(name, aliases)) != list(model.aliases):
            model.set_aliases(wanted, actor=p.actor)
            changed = True
        prices = _token_prices(
            model.token_prices, cached_input_price_per_million, cache_write_price_per_million,
            cache_write_1h_price_per_million, reasoning_price_per_million,
        )  # fmt: skip
        if prices != model.token_prices:
            model.set_token_prices(prices, actor=p.actor)
            changed = True
        if changed:
            self.commit(model)
        return model_view(self.state.models[name])

    def remove_model(self, p: Principal, name: str) -> None:
        p.require_admin("remove models")
        model = self.editable(self.find(self.state.models, name, "model"))
        model.remove(actor=p.actor)
        self.commit(model)

    def _fallbacks(self, name: str, fallbacks: list[str] | None) -> list[str]:
        cleaned = [check_model_name(f, "fallbacks", "a fallback model name") for f in fallbacks or []]
        if name in cleaned:
            raise InvalidFieldError("fallbacks", "a model cannot be its own fallback")
        if len(cleaned) > _MAX_FALLBACKS:
            raise InvalidFieldError("fallbacks", f"a model may have at most {_MAX_FALLBACKS} fallbacks")
        return cleaned

    def _alias_owner(self, alias: str) -> str | None:
        return next(
            (m.name for m in self.state.models.values() if not m.deleted and alias in m.aliases), None
        )

    def _aliases(self, name: str, aliases: list[str]) -> list[str]:
        """Checked aliases: names as clean as model names, none another model's name or alias."""
        if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES:
            raise InvalidFieldError("aliases", f"aliases must be a list of at most {MAX_ALIASES} names")
        cleaned: list[str] = []
        for alias in aliases:
            if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
                raise InvalidFieldError(
                    "aliases", f"alias {alias!r} must be 1 to 200 letters, digits or . _ - : / @ characters"
                )
            if alias == name:
                raise InvalidFieldError("aliases", "a model's alias cannot be its own name")
            if alias in cleaned:
                continue
            other = self.state.models.get(alias)
            if other is not None and not other.deleted:
                raise ConflictError(f"alias {alias!r} is the name of another model", "alias_taken")
            owner = self._alias_owner(alias)
            if owner is not None and owner != name:
                raise ConflictError(f"alias {alias!r} belongs to the model {owner!r}", "alias_taken")
            cleaned.append(alias)
        return cleaned

    def list_models(self, p: Principal, include_unavailable: bool = False) -> list[dict[str, Any]]:
        """The models the caller's own API tokens may call (the proxy's ``/v1/models`` for them), each
        with ``available``; with ``include_unavailable`` every model, and why the caller may not use it."""
        reasons = self._exclusion_reasons(p)
        answer = []
        for _, model in sorted(self.state.models.items()):
            if model.deleted or model.endpoint not in self.state.endpoints:
                continue
            if self.state.endpoints[model.endpoint].deleted:
                continue
            reason = reasons.get(model.name)
            if reason is not None and not include_unavailable:
                continue
            answer.append({**model_view(model), "available": reason is None, "unavailable_reason": reason})
        return answer

    def _exclusion_reasons(self, p: Principal) -> dict[str, str]:
        """Model name -> who excluded it for the caller's personal tokens (org, then team, then user)."""
        user = self.state.users.get(p.user_id)
        if user is None:
            return {}
        org = self.state.orgs.get(user.org_id)
        teams = self.state.teams_of(p.user_id)
        levels = (
            ("excluded by your organisation", org),
            ("excluded by your team", teams[0] if teams else None),
            ("excluded for your account", user),
        )
        reasons: dict[str, str] = {}
        for reason, level in levels:
            for name in getattr(level, "excluded_models", None) or []:
                reasons.setdefault(name, reason)
        return reasons

    # -- MCP servers -------------------------------------------------------------------------------

    def register_mcp_server(
        self,
        p: Principal,
        name: str,
        url: str,
        allowed_team_ids: list[str] | None = None,
        api_key_env: str | None = None,
    ) -> dict[str, Any]:
        p.require_admin("register MCP servers")
        name, url = check_mcp_name(name), _mcp_url(url)
        api_key_env = _key_env(api_key_env)
        teams = self._team_ids(allowed_team_ids)
        existing = self.state.mcp_servers.get(name)
        if existing is not None and not existing.deleted:
            raise ConflictError(f"MCP server {name!r} exists", "mcp_server_exists")
        if existing is not None:
            server = self.editable(existing)
            server.update(url, teams, api_key_env or None, actor=p.actor)
        else:
            server = McpServer(name, url, teams, api_key_env or None, actor=p.actor)
        self.commit(server)
        return mcp_view(self.state.mcp_servers[name])

    def update_mcp_server(
        self,
        p: Principal,
        name: str,
        url: str | None = None,
        allowed_team_ids: list[str] | None = None,
        api_key_env: str | None = None,
    ) -> dict[str, Any]:
        p.require_admin("change MCP servers")
        server = self.editable(self.find(self.state.mcp_servers, name, "MCP server"))
        new_url = _mcp_url(url) if url is not None else server.url
        teams = self._team_ids(allowed_team_ids) if allowed_team_ids is not None else server.allowed_team_ids
        key_env = _key_env(api_key_env) if api_key_env is not None else server.api_key_env
        if (new_url, teams, key_env) != (server.url, server.allowed_team_ids, server.api_key_env):
            server.update(new_url, teams, key_env, actor=p.actor)
            self.commit(server)
        return mcp_view(self.state.mcp_servers[name])

    def remove_mcp_server(self, p: Principal, name: str) -> None:
        p.require_admin("remove MCP servers")
        server = self.editable(self.find(self.state.mcp_servers, name, "MCP server"))
        server.remove(actor=p.actor)
        self.commit(server)

    def list_mcp_servers(self, p: Principal) -> list[dict[str, Any]]:
        servers = [s for _, s in sorted(self.state.mcp_servers.items()) if not s.deleted]
        return [mcp_view(s) for s in servers if p.admin or set(s.allowed_team_ids) & p.team_ids]

    def _team_ids(self, team_ids: list[str] | None) -> list[str]:
        for team_id in team_ids or []:
            self.find(self.state.teams, team_id, "team")
        return sorted(set(team_ids or []))

    # -- terms of service --------------------------------------------------------------------------

    def publish_terms(self, p: Principal, version: str, url: str) -> dict[str, Any]:
        p.require_admin("publish terms of service")
        version = check_name(version, "version", "the terms of service version", 50)
        url = check_url(url, "url", "the terms of service URL")
        terms = self.state.terms
        terms = self.editable(terms) if terms is not None else TermsOfService(actor=p.actor)
        terms.publish(version, url, actor=p.actor)
        self.commit(terms)
        return self.current_terms() or {}

    def current_terms(self) -> dict[str, str] | None:
        return self.state.terms.current if self.state.terms else None
