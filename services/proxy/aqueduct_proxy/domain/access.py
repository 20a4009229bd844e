"""Who may call what: token lookup, terms of service, budgets, model permission and routing rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aqueduct_libs.snapshot import Limits, ModelRoute, TokenGrant
from aqueduct_proxy.domain.budgets import scope_label
from aqueduct_proxy.domain.errors import (
    BudgetExhaustedError,
    ForbiddenError,
    InvalidTokenError,
    ModelNotFoundError,
    TermsNotAcceptedError,
    shown,
)
from aqueduct_proxy.domain.snapshot import Endpoint, Snapshot

__all__ = ["Route", "check_grant", "check_quota", "model_allowed", "resolve_model", "visible_models"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where one model call goes: the model as the client named it and as the upstream knows it."""

    model: str  # the name the client used ("" when the request names none)
    upstream_model: str | None
    endpoint: Endpoint
    fallbacks: tuple[str, ...] = ()
    model_limits: Limits | None = None
    alias: str | None = None  # the alias the client named, when it named one (model is then the model's)


def check_grant(grant: TokenGrant | None, snapshot: Snapshot, public_ui_url: str) -> TokenGrant:
    if grant is None:
        raise InvalidTokenError("Incorrect API key provided. Create a token in the Aqueduct web UI.")
    if grant.expires_at is not None and grant.expires_at <= datetime.now(UTC):
        raise InvalidTokenError("This API key has expired. Create a new token in the Aqueduct web UI.")
    if not grant.tos_accepted:
        where = grant.tos_url or public_ui_url
        raise TermsNotAcceptedError(
            f"You have not accepted the current terms of service. Accept them at {where} to use this API."
        )
    return grant


def check_quota(grant: TokenGrant, snapshot: Snapshot) -> None:
    """BudgetExhaustedError while accounting's decision that one of the grant's budgets is used up is in
    force. Checked on calls that cost (admission), not on what is free: listing models, counting a
    prompt's tokens, reading one's files and batch results."""
    decision = snapshot.quota_in_force(grant)
    if decision is not None:
        resets = decision.until.astimezone(UTC).isoformat().replace("+00:00", "Z")
        rule = snapshot.budgets.get(f"{decision.scope}.{decision.scope_id}")
        whose = scope_label(decision.scope, decision.scope_id, rule.name if rule is not None else "")
        raise BudgetExhaustedError(
            f"Budget exceeded: the {decision.budget} ({whose}) is used up. "
            f"It resets at {resets}. Ask your administrator to raise it or wait for the next period.",
            headers={"x-aqueduct-budget-reset": resets},
        )


def model_allowed(grant: TokenGrant, model: str) -> bool:
    return grant.allowed_models is None or model in grant.allowed_models


def visible_models(grant: TokenGrant, snapshot: Snapshot) -> list[ModelRoute]:
    return sorted(
        (
            m
            for m in snapshot.models.values()
            if model_allowed(grant, m.name) and m.endpoint in snapshot.endpoints
        ),
        key=lambda m: m.name,
    )


def resolve_model(grant: TokenGrant, snapshot: Snapshot, model: str, slug: str | None = None) -> Route:
    """Route a model name; with ``slug`` (the ``/{slug}/v1/...`` form) the model must live on that endpoint."""
    route = snapshot.models.get(model)
    alias = None
    if route is None and model in snapshot.aliases:
        # An alias is the model it names: the same access rules, limits and prices apply.
        alias, route = model, snapshot.models.get(snapshot.aliases[model])
    if slug is not None:
        endpoint = snapshot.endpoints.get(slug)
        if endpoint is None:
            raise ModelNotFoundError(f"The endpoint '{shown(slug)}' does not exist.")
        if route is None or route.endpoint != slug:
            # Clients of an endpoint route may use the upstream's own model id.
            alias = None
            route = next(
                (m for m in snapshot.models.values() if m.endpoint == slug and m.upstream_model == model),
                None,
            )
        if route is None:
            raise ModelNotFoundError(
                f"The model '{shown(model)}' is not served by the endpoint '{shown(slug)}'.", param="model"
            )
    if route is None:
        raise ModelNotFoundError(f"The model '{shown(model)}' does not exist.", param="model")
    if not model_allowed(grant, route.name):
        raise ForbiddenError(f"This API key is not allowed to use the model '{route.name}'.", param="model")
    endpoint = snapshot.endpoints.get(route.endpoint)
    if endpoint is None:
        raise ModelNotFoundError(f"The model '{shown(model)}' has no endpoint configured.", param="model")
    return Route(
        model=route.name,
        upstream_model=route.upstream_model,
        endpoint=endpoint,
        fallbacks=tuple(route.fallbacks),
        model_limits=grant.model_limits.get(route.name),
        alias=alias,
    )
