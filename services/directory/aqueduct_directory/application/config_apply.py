"""Config as code: ``aqueduct.yaml`` applied idempotently (only differences become events).

The file adds and updates; it never deletes what it does not mention, so objects created in the UI
survive a restart. Secrets appear only as references (``${OPENAI_API_KEY}``); the name is stored.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aqueduct_directory.application.app import DirectoryApp
from aqueduct_directory.domain.catalog import TOKEN_PRICE_FIELDS
from aqueduct_directory.domain.errors import InvalidFieldError, InvalidInputError
from aqueduct_directory.domain.inputs import (
    check_description,
    check_mcp_name,
    check_model_name,
    check_name,
    check_slug,
    check_url,
)
from aqueduct_directory.domain.policy import Principal
from aqueduct_directory.domain.values import (
    clean_budgets,
    clean_limits,
    clean_model_limits,
    clean_models,
    clean_price,
)

__all__ = ["ConfigFile", "apply_config", "check_config", "parse_config"]

_ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointConfig(_Strict):
    slug: str
    url: str
    provider: str = "openai"
    api_key: str | None = None
    api_key_env: str | None = None
    responses: bool = True  # false: a chat-only server; the proxy translates /v1/responses

    def key_env(self) -> str | None:
        if self.api_key is None:
            return self.api_key_env
        match = _ENV_REF.match(self.api_key.strip())
        if not match:
            raise InvalidInputError(
                f"endpoint {self.slug}: api_key must reference an environment variable such as "
                "${OPENAI_API_KEY}; secret values are never stored"
            )
        return match.group(1)


class ModelConfig(_Strict):
    name: str
    endpoint: str
    upstream_model: str | None = None
    input_price_per_million: float | str | None = None
    output_price_per_million: float | str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)
    cached_input_price_per_million: float | str | None = None
    cache_write_price_per_million: float | str | None = None
    cache_write_1h_price_per_million: float | str | None = None
    reasoning_price_per_million: float | str | None = None

    def token_prices(self) -> dict[str, Any]:
        """The token-class prices the file gives (a price it leaves out is left as it is)."""
        return {f: getattr(self, f) for f in TOKEN_PRICE_FIELDS if getattr(self, f) is not None}


class Levels(_Strict):
    limits: dict[str, Any] | None = None
    budgets: dict[str, Any] | None = None
    excluded_models: list[str] | None = None
    model_limits: dict[str, dict[str, Any]] | None = None


class TeamConfig(Levels):
    name: str
    description: str = ""


class OrgConfig(Levels):
    name: str
    sso_group: str | None = None
    default_team: str | None = None  # name of one of its teams: new users join it on first sign-in
    teams: list[TeamConfig] = Field(default_factory=list)


class McpServerConfig(_Strict):
    name: str
    url: str
    api_key: str | None = None
    teams: list[str] = Field(default_factory=list)  # "org/team" names

    def key_env(self) -> str | None:
        return EndpointConfig(slug=f"mcp {self.name}", url=self.url, api_key=self.api_key).key_env()


class TermsConfig(_Strict):
    version: str
    url: str


class ConfigFile(BaseModel):
    # Unknown top-level sections are left to whoever reads them; the sections below are strict.
    model_config = ConfigDict(extra="ignore")

    default_org: str | None = None
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    orgs: list[OrgConfig] = Field(default_factory=list)
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    terms: TermsConfig | None = None


def parse_config(text: str) -> ConfigFile:
    try:
        data = yaml.safe_load(text) or {}
        return ConfigFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise InvalidInputError(f"invalid configuration: {exc}") from exc


def check_config(config: ConfigFile) -> None:
    """Every value of the file against the rules the API applies, before anything is changed: a file with
    one bad value changes nothing. The error names the place in the file (``endpoints[1].url``)."""

    def at(where: str, check: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except InvalidFieldError as exc:
            raise InvalidFieldError(f"{where}.{exc.field}", exc.message) from exc

    for i, ep in enumerate(config.endpoints):
        at(f"endpoints[{i}]", check_slug, ep.slug)
        at(f"endpoints[{i}]", check_url, ep.url, "url", "the endpoint URL")
    for i, m in enumerate(config.models):
        at(f"models[{i}]", check_model_name, m.name)
        if m.upstream_model:
            at(
                f"models[{i}]",
                check_model_name,
                m.upstream_model,
                "upstream_model",
                "the upstream model name",
            )
        at(f"models[{i}]", clean_price, m.input_price_per_million, "input_price_per_million")
        at(f"models[{i}]", clean_price, m.output_price_per_million, "output_price_per_million")
        for fallback in m.fallbacks:
            at(f"models[{i}]", check_model_name, fallback, "fallbacks", "a fallback model name")
    for i, o in enumerate(config.orgs):
        at(f"orgs[{i}]", check_name, o.name, "name", "the org name")
        at(f"orgs[{i}]", check_name, o.sso_group, "sso_group", "the SSO group", 200, required=False)
        _check_levels(at, f"orgs[{i}]", o)
        for j, t in enumerate(o.teams):
            at(f"orgs[{i}].teams[{j}]", check_name, t.name, "name", "the team name")
            at(
                f"orgs[{i}].teams[{j}]",
                check_description,
                t.description,
                "description",
                "the team description",
            )
            _check_levels(at, f"orgs[{i}].teams[{j}]", t)
    for i, server in enumerate(config.mcp_servers):
        at(f"mcp_servers[{i}]", check_mcp_name, server.name)
        at(f"mcp_servers[{i}]", check_url, server.url, "url", "the MCP server URL")
    if config.terms is not None:
        at("terms", check_name, config.terms.version, "version", "the terms of service version", 50)
        at("terms", check_url, config.terms.url, "url", "the terms of service URL")


def _check_levels(at: Any, where: str, level: Levels) -> None:
    if level.limits is not None:
        at(where, clean_limits, level.limits)
    if level.budgets is not None:
        at(where, clean_budgets, level.budgets)
    if level.excluded_models is not None:
        at(where, clean_models, level.excluded_models)
    if level.model_limits is not None:
        at(where, clean_model_limits, level.model_limits)


def _level_changes(current: Any, wanted: Levels) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if wanted.limits is not None and clean_limits(wanted.limits) != (current.limits if current else None):
        changes["limits"] = wanted.limits
    if wanted.budgets is not None and clean_budgets(wanted.budgets) != (current.budgets if current else None):
        changes["budgets"] = wanted.budgets
    if wanted.excluded_models is not None and clean_models(wanted.excluded_models) != (
        current.excluded_models if current else None
    ):
        changes["excluded_models"] = wanted.excluded_models
    if wanted.model_limits is not None and clean_model_limits(wanted.model_limits) != (
        current.model_limits if current else None
    ):
        changes["model_limits"] = wanted.model_limits
    return changes


def apply_config(app: DirectoryApp, p: Principal, config: ConfigFile, dry_run: bool = False) -> list[str]:
    """Returns the changes made (or, with ``dry_run``, the changes it would make)."""
    p.require_admin("apply configuration")
    check_config(config)
    changes: list[str] = []
    if config.default_org and config.default_org != app.default_org:
        changes.append(f"set default org to {config.default_org}")
        if not dry_run:
            app.default_org = config.default_org
    for ep in config.endpoints:
        env = ep.key_env()
        current = app.state.endpoints.get(ep.slug)
        if current is None or current.deleted:
            changes.append(f"create endpoint {ep.slug}")
            if not dry_run:
                app.register_endpoint(p, ep.slug, ep.url, ep.provider, env, ep.responses)
        elif (current.url, current.provider, current.api_key_env, current.responses) != (
            ep.url,
            ep.provider,
            env,
            ep.responses,
        ):
            changes.append(f"update endpoint {ep.slug}")
            if not dry_run:
                app.update_endpoint(p, ep.slug, ep.url, ep.provider, env or "", ep.responses)
    for m in config.models:
        current_model = app.state.models.get(m.name)
        wanted = (m.endpoint, m.upstream_model or m.name, clean_price(m.input_price_per_million),
                  clean_price(m.output_price_per_million), list(m.fallbacks))  # fmt: skip
        if current_model is None or current_model.deleted:
            changes.append(f"create model {m.name}")
            if not dry_run:
                app.register_model(p, m.name, *wanted, aliases=m.aliases, **m.token_prices())
            continue
        prices = m.token_prices()
        if list(current_model.aliases) != m.aliases or any(
            clean_price(v) != current_model.token_prices.get(f) for f, v in prices.items()
        ):
            changes.append(f"update model {m.name}: aliases and token prices")
            if not dry_run:
                app.update_model(p, m.name, aliases=m.aliases, **prices)
        # A price the file does not give is left as it is (it may have been set in the UI or the API).
        wanted = (*wanted[:2], wanted[2] or current_model.input_price_per_million,
                  wanted[3] or current_model.output_price_per_million, wanted[4])  # fmt: skip
        if wanted != (current_model.endpoint, current_model.upstream_model, current_model.input_price_per_million,
                      current_model.output_price_per_million, current_model.fallbacks):  # fmt: skip
            changes.append(f"update model {m.name}")
            if not dry_run:
                app.update_model(p, m.name, *wanted)
    for o in config.orgs:
        changes += _apply_org(app, p, o, dry_run)
    for server in config.mcp_servers:
        changes += _apply_mcp_server(app, p, server, dry_run)
    current_terms = app.current_terms()
    if config.terms is not None and (current_terms or {}).get("version") != config.terms.version:
        changes.append(f"publish terms of service {config.terms.version}")
        if not dry_run:
            app.publish_terms(p, config.terms.version, config.terms.url)
    return changes


def _apply_mcp_server(app: DirectoryApp, p: Principal, server: McpServerConfig, dry_run: bool) -> list[str]:
    team_ids = []
    for ref in server.teams:
        org_name, _, team_name = ref.partition("/")
        org = app.state.org_by_name(org_name)
        team = app.state.team_by_name(str(org.id), team_name) if org else None
        if team is None and not dry_run:
            raise InvalidInputError(f"MCP server {server.name}: no team {ref!r} (write teams as org/team)")
        if team is not None:
            team_ids.append(str(team.id))
    wanted = (server.url, sorted(set(team_ids)), server.key_env())
    current = app.state.mcp_servers.get(server.name)
    if current is None or current.deleted:
        if not dry_run:
            app.register_mcp_server(p, server.name, *wanted)
        return [f"create MCP server {server.name}"]
    if wanted != (current.url, current.allowed_team_ids, current.api_key_env):
        if not dry_run:
            app.update_mcp_server(p, server.name, wanted[0], wanted[1], wanted[2] or "")
        return [f"update MCP server {server.name}"]
    return []


def _apply_org(app: DirectoryApp, p: Principal, o: OrgConfig, dry_run: bool) -> list[str]:
    changes: list[str] = []
    org = app.state.org_by_name(o.name)
    level = _level_changes(org, o)
    if org is None:
        changes.append(f"create org {o.name}")
        if dry_run:
            return changes + [f"create team {o.name}/{t.name}" for t in o.teams]
        org_id = app.create_org(p, o.name, o.sso_group)["id"]
        org = app.state.orgs[org_id]
    elif (o.sso_group or None) != org.sso_group:
        changes.append(f"update org {o.name}: sso_group")
        if not dry_run:
            app.update_org(p, str(org.id), sso_group=o.sso_group)
    if level:
        changes.append(f"update org {o.name}: {', '.join(sorted(level))}")
        if not dry_run:
            app.update_org(p, str(org.id), **level)
    for t in o.teams:
        team = app.state.team_by_name(str(org.id), t.name)
        team_level = _level_changes(team, t)
        if team is None:
            changes.append(f"create team {o.name}/{t.name}")
            if not dry_run:
                team_id = app.create_team(p, str(org.id), t.name, t.description)["id"]
                if team_level:
                    app.update_team(p, team_id, **team_level)
            continue
        if t.description != team.description:
            team_level["description"] = t.description
        if team_level:
            changes.append(f"update team {o.name}/{t.name}: {', '.join(sorted(team_level))}")
            if not dry_run:
                app.update_team(p, str(team.id), **team_level)
    if o.default_team is not None:
        team = app.state.team_by_name(str(org.id), o.default_team)
        if team is None and not dry_run:
            raise InvalidInputError(f"org {o.name}: default_team {o.default_team!r} is not one of its teams")
        if team is None or str(team.id) != org.default_team_id:
            changes.append(f"update org {o.name}: default_team")
            if not dry_run and team is not None:
                app.update_org(p, str(org.id), default_team_id=str(team.id))
    return changes
