"""What a token (or a user, for credentials that name one) may do: effective limits, allowed models and MCP servers, terms of service status.

Computed here once so the proxy never has to look anything up on the request path.
"""

from __future__ import annotations

from typing import Any

from aqueduct_directory.domain.catalog import Endpoint, McpServer, Model
from aqueduct_directory.domain.org import Org, Team, User
from aqueduct_directory.domain.state import DirectoryState
from aqueduct_directory.domain.token import Token
from aqueduct_directory.domain.values import budget_nanos, merge_limits, price_nanos_per_token
from aqueduct_libs.snapshot import (
    BudgetRule,
    EndpointRoute,
    Limits,
    McpServerRoute,
    ModelRoute,
    TokenGrant,
    UserRoles,
)

__all__ = [
    "budget_rule",
    "budget_rules",
    "effective_team",
    "endpoint_route",
    "excluded_models",
    "mcp_route",
    "model_route",
    "token_grant",
    "user_grant",
]


def effective_team(state: DirectoryState, token: Token) -> Team | None:
    """Service-account tokens belong to their team; a personal token to the team it was issued for,
    else to the team the user joined first (stable, because join times are recorded)."""
    user_teams = state.user_teams.get(token.user_id, set())
    if token.service_account_id:
        team = state.teams.get(token.team_id or "")
        return team if team is not None and not team.deleted else None
    if token.team_id and token.team_id in user_teams:
        return state.teams[token.team_id]
    teams = state.teams_of(token.user_id)
    return teams[0] if teams else None


def excluded_models(org: Org | None, team: Team | None, user: User | None) -> set[str]:
    # A union: a model excluded higher up can never be re-allowed lower down.
    excluded: set[str] = set()
    for level in (org, team, user):
        if level is not None:
            excluded.update(level.excluded_models)
    return excluded


def token_grant(state: DirectoryState, token: Token) -> TokenGrant | None:
    """The snapshot entry for a live token, or None when the token must not authenticate at all."""
    if token.revoked:
        return None
    user = state.users.get(token.user_id)
    org = state.orgs.get(token.org_id)
    if user is None or user.deleted or org is None:
        return None
    team = effective_team(state, token)
    sa = state.service_accounts.get(token.service_account_id) if token.service_account_id else None
    if token.service_account_id and (sa is None or sa.deleted):
        return None
    return TokenGrant(
        token_id=str(token.id),
        token_hash=token.token_hash,
        name=token.name,
        user_id=token.user_id,
        service_account_id=token.service_account_id,
        org_id=token.org_id,
        expires_at=token.expires_at,
        **_entitlements(state, org, team, user, token.limits),
    )


def user_grant(state: DirectoryState, user: User) -> TokenGrant | None:
    """The snapshot entry ``user.<id>`` of an active user: what a credential naming the user (not an
    API token, e.g. a JupyterHub token) may do, and the user's current roles (which the auth and
    accounting services check session tokens against). None once the user is deactivated."""
    org = state.orgs.get(user.org_id)
    if user.deleted or org is None:
        return None
    user_id = str(user.id)
    teams = state.teams_of(user_id)
    return TokenGrant(
        token_id=f"user:{user_id}",
        token_hash="",
        name=user.name,
        user_id=user_id,
        org_id=user.org_id,
        roles=UserRoles(
            admin=user.admin,
            org_admin=user.org_admin,
            team_ids=[str(t.id) for t in teams],
            team_admin_ids=[str(t.id) for t in teams if t.is_admin(user_id)],
        ),
        **_entitlements(state, org, teams[0] if teams else None, user, None),
    )


def _entitlements(
    state: DirectoryState, org: Org, team: Team | None, user: User, own_limits: dict[str, int] | None
) -> dict[str, Any]:
    """What token and user grants share: effective limits, models, MCP servers, terms of service."""
    limits = merge_limits(own_limits, user.limits, team.limits if team else None, org.limits)
    model_limits: dict[str, Limits] = {}
    names = set(org.model_limits) | set(user.model_limits) | (set(team.model_limits) if team else set())
    for name in sorted(names):
        merged = merge_limits(
            user.model_limits.get(name),
            team.model_limits.get(name) if team else None,
            org.model_limits.get(name),
        )
        if merged:
            model_limits[name] = Limits(**merged)
    excluded = excluded_models(org, team, user)
    allowed = None
    if excluded:
        allowed = sorted(n for n, m in state.models.items() if not m.deleted and n not in excluded)
    team_id = str(team.id) if team else None
    mcp = sorted(
        name for name, s in state.mcp_servers.items() if not s.deleted and team_id in s.allowed_team_ids
    )
    current = state.terms.current if state.terms else None
    return {
        "team_id": team_id,
        "limits": Limits(**limits),
        "model_limits": model_limits,
        "allowed_models": allowed,
        "allowed_mcp_servers": mcp,
        "tos_accepted": current is None or user.tos_accepted_version == current["version"],
        "tos_url": current["url"] if current else None,
    }


def budget_rule(state: DirectoryState, scope: str, scope_id: str) -> BudgetRule | None:
    """The snapshot entry ``budget.<scope>.<id>``, or None when that org, team or user has no budget
    (or is gone)."""
    holder: Org | Team | User | None
    if scope == "org":
        holder = state.orgs.get(scope_id)
    elif scope == "team":
        holder = state.teams.get(scope_id)
    else:
        holder = state.users.get(scope_id)
    if holder is None or getattr(holder, "deleted", False) or not holder.budgets:
        return None
    budgets = holder.budgets
    rule = BudgetRule(
        scope=scope,  # type: ignore[arg-type]
        scope_id=scope_id,
        name=holder.name,
        daily_nanos=budget_nanos(budgets.get("daily_usd")),
        monthly_nanos=budget_nanos(budgets.get("monthly_usd")),
        daily_tokens=budgets.get("daily_tokens"),
        monthly_tokens=budgets.get("monthly_tokens"),
    )
    return None if rule.is_empty else rule


def budget_rules(state: DirectoryState) -> list[BudgetRule]:
    """Every budget of the directory."""
    rules = []
    for scope, holders in (("org", state.orgs), ("team", state.teams), ("user", state.users)):
        for scope_id in holders:
            rule = budget_rule(state, scope, scope_id)
            if rule is not None:
                rules.append(rule)
    return rules


def endpoint_route(endpoint: Endpoint) -> EndpointRoute:
    return EndpointRoute(
        slug=endpoint.slug,
        url=endpoint.url,
        provider=endpoint.provider,  # type: ignore[arg-type]
        api_key_env=endpoint.api_key_env,
        responses=endpoint.responses,
    )


def model_route(model: Model) -> ModelRoute:
    return ModelRoute(
        name=model.name,
        endpoint=model.endpoint,
        upstream_model=model.upstream_model,
        input_price_nanos_per_token=price_nanos_per_token(model.input_price_per_million),
        output_price_nanos_per_token=price_nanos_per_token(model.output_price_per_million),
        fallbacks=list(model.fallbacks),
        aliases=list(model.aliases),
        **{
            field.replace("_per_million", "_nanos_per_token"): price_nanos_per_token(price)
            for field, price in model.token_prices.items()
        },
    )


def mcp_route(server: McpServer) -> McpServerRoute:
    return McpServerRoute(
        name=server.name,
        url=server.url,
        allowed_team_ids=list(server.allowed_team_ids),
        api_key_env=server.api_key_env,
    )
