"""Plain-value views of the aggregates, as the HTTP API and the audit answer them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aqueduct_directory.domain.catalog import TOKEN_PRICE_FIELDS, Endpoint, McpServer, Model
from aqueduct_directory.domain.org import Org, Team, User
from aqueduct_directory.domain.state import DirectoryState
from aqueduct_directory.domain.token import ServiceAccount, Token

__all__ = [
    "endpoint_view",
    "mcp_view",
    "model_view",
    "org_view",
    "service_account_view",
    "team_brief_view",
    "team_view",
    "token_view",
    "user_view",
    "view_of",
]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def org_view(org: Org) -> dict[str, Any]:
    return {
        "id": str(org.id),
        "name": org.name,
        "sso_group": org.sso_group,
        "limits": org.limits,
        "budgets": org.budgets,
        "excluded_models": org.excluded_models,
        "model_limits": org.model_limits,
        "default_team_id": org.default_team_id,
        "created_at": _iso(org.created_on),
    }


def _person(state: DirectoryState | None, user_id: str | None) -> dict[str, Any]:
    """Name and email of a user, so screens and exports show people, not ids."""
    user = state.users.get(user_id or "") if state is not None else None
    if user is None:
        return {}
    return {"name": user.name, "email": user.email, "active": not user.deleted}


def _roles(state: DirectoryState | None, user_id: str) -> dict[str, Any]:
    """A member's org-wide roles, for the role tag their team shows (User, Team-Admin, Org-Admin, Admin)."""
    user = state.users.get(user_id) if state is not None else None
    return {} if user is None else {"org_admin": bool(user.org_admin), "admin": bool(user.admin)}


def team_view(team: Team, state: DirectoryState | None = None) -> dict[str, Any]:
    return {
        "id": str(team.id),
        "org_id": team.org_id,
        "name": team.name,
        "description": team.description,
        "limits": team.limits,
        "budgets": team.budgets,
        "excluded_models": team.excluded_models,
        "model_limits": team.model_limits,
        "members": [
            {
                "user_id": uid,
                "team_admin": m["team_admin"],
                "joined_at": m["joined_at"],
                **_person(state, uid),
                **_roles(state, uid),
            }
            for uid, m in team.members.items()
        ],
        "deleted": team.deleted,
        "created_at": _iso(team.created_on),
    }


def team_brief_view(team: Team) -> dict[str, Any]:
    """A team as lists and pickers show it: no members, their number."""
    return {
        "id": str(team.id),
        "org_id": team.org_id,
        "name": team.name,
        "description": team.description,
        "member_count": len(team.members),
        "deleted": team.deleted,
        "created_at": _iso(team.created_on),
    }


def user_view(user: User, state: DirectoryState | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": str(user.id),
        "org_id": user.org_id,
        "email": user.email,
        "name": user.name,
        "subject": user.subject,
        "admin": user.admin,
        # Admin through the identity provider's admin group (re-evaluated at every sign-in), not granted
        # in the product.
        "admin_from_sign_in": user.admin_from_sign_in,
        "org_admin": user.org_admin,
        "limits": user.limits,
        "budgets": user.budgets,
        "excluded_models": user.excluded_models,
        "model_limits": user.model_limits,
        "tos_accepted_version": user.tos_accepted_version,
        "deleted": user.deleted,
        "created_at": _iso(user.created_on),
    }
    if state is not None:
        teams = state.teams_of(str(user.id))
        view["teams"] = [str(t.id) for t in teams]
        view["team_admin"] = [str(t.id) for t in teams if t.is_admin(str(user.id))]
        roles = ["User"]
        if view["team_admin"]:
            roles.append("Team-Admin")
        if user.org_admin:
            roles.append("Org-Admin")
        if user.admin:
            roles.append("Admin")
        view["roles"] = roles
    return view


def token_view(token: Token, team_id: str | None = None) -> dict[str, Any]:
    return {
        "id": str(token.id),
        "name": token.name,
        "preview": token.preview,
        "user_id": token.user_id,
        "service_account_id": token.service_account_id,
        "team_id": team_id if team_id is not None else token.team_id,
        "org_id": token.org_id,
        "limits": token.limits,
        "expires_at": _iso(token.expires_at),
        "created_at": _iso(token.created_on),
        "revoked": token.revoked,
        "management": getattr(token, "management", False),
    }


def service_account_view(sa: ServiceAccount, state: DirectoryState | None = None) -> dict[str, Any]:
    owner = _person(state, sa.owner_user_id)
    return {
        "owner_name": owner.get("name"),
        "owner_email": owner.get("email"),
        "id": str(sa.id),
        "team_id": sa.team_id,
        "org_id": sa.org_id,
        "name": sa.name,
        "description": sa.description,
        "owner_user_id": sa.owner_user_id,
        "token_id": sa.token_id,
        "deleted": sa.deleted,
        "created_at": _iso(sa.created_on),
    }


def endpoint_view(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "slug": endpoint.slug,
        "url": endpoint.url,
        "provider": endpoint.provider,
        "api_key_env": endpoint.api_key_env,
        "responses": endpoint.responses,
    }


def model_view(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "endpoint": model.endpoint,
        "upstream_model": model.upstream_model,
        "input_price_per_million": model.input_price_per_million,
        "output_price_per_million": model.output_price_per_million,
        "fallbacks": model.fallbacks,
        "aliases": list(model.aliases),
        **{field: model.token_prices.get(field) for field in TOKEN_PRICE_FIELDS},
    }


def mcp_view(server: McpServer) -> dict[str, Any]:
    return {
        "name": server.name,
        "url": server.url,
        "allowed_team_ids": server.allowed_team_ids,
        "api_key_env": server.api_key_env,
    }


def view_of(aggregate: Any, state: DirectoryState | None = None) -> dict[str, Any]:
    """Any aggregate as a plain dict (the audit's "state at time T")."""
    views = {
        Org: org_view,
        Team: team_view,
        Token: token_view,
        ServiceAccount: service_account_view,
        Endpoint: endpoint_view,
        Model: model_view,
        McpServer: mcp_view,
    }
    if isinstance(aggregate, User):
        return {"type": "User", **user_view(aggregate, state)}
    for cls, view in views.items():
        if isinstance(aggregate, cls):
            return {"type": cls.__name__, **view(aggregate)}
    return {"type": type(aggregate).__name__, "id": str(aggregate.id), "version": aggregate.version}
