"""The in-memory mirror of the auth snapshot and quota buckets: everything the request path looks up.

Entries are parsed once, when the KV watch delivers them, so a request does dictionary lookups only.
A bad entry is logged and skipped; the last good value of that key stays in force.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from aqueduct_libs import names
from aqueduct_libs.pricing import Price, PriceBook
from aqueduct_libs.snapshot import BudgetRule, EndpointRoute, ModelRoute, QuotaDecision, TokenGrant

__all__ = ["Endpoint", "Snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint route with what forwarding needs precomputed (base URL, auth header)."""

    slug: str
    base_url: str  # without trailing slash, including /v1 where the provider has it
    provider: str
    auth_header: str | None = field(repr=False)  # "Bearer <key>", read when the route arrives
    route: EndpointRoute = field(repr=False)
    api_key: str | None = field(default=None, repr=False)
    root_url: str = ""  # base_url without a trailing /v1: Anthropic's paths start with /v1 themselves

    @classmethod
    def from_route(cls, route: EndpointRoute) -> Endpoint:
        key = os.environ.get(route.api_key_env) if route.api_key_env else None
        if route.api_key_env and not key:
            log.warning("endpoint %s: environment variable %s is not set", route.slug, route.api_key_env)
        base_url = route.url.rstrip("/")
        return cls(
            slug=route.slug,
            base_url=base_url,
            provider=route.provider,
            auth_header=f"Bearer {key}" if key else None,
            route=route,
            api_key=key,
            root_url=base_url.removesuffix("/v1"),
        )


class Snapshot:
    """Token grants, model routes and their prices, endpoints, budgets and quota decisions, kept current
    by KV watches."""

    def __init__(self, price_catalog: dict[str, Price] | None = None) -> None:
        self.grants: dict[str, TokenGrant] = {}
        self.models: dict[str, ModelRoute] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.budgets: dict[str, BudgetRule] = {}  # "user.<id>", "team.<id>", "org.<id>"
        self.budgets_version = 0  # changes with every budget put or delete (for the callers' caches)
        self.prices = PriceBook(price_catalog)
        self.quotas: dict[str, QuotaDecision] = {}
        self.aliases: dict[str, str] = {}  # alias -> model name
        self._model_keys: dict[str, str] = {}  # KV key -> model name, to apply deletes
        self._budget_keys: dict[str, str] = {}  # KV key -> "<scope>.<id>", to apply deletes

    # -- auth_snapshot bucket --------------------------------------------------------------------------

    def on_snapshot_put(self, key: str, value: bytes) -> None:
        try:
            if key.startswith(names.SNAPSHOT_TOKEN_PREFIX):
                grant = TokenGrant.model_validate_json(value)
                self.grants[key[len(names.SNAPSHOT_TOKEN_PREFIX) :]] = grant
            elif key.startswith(names.SNAPSHOT_MODEL_PREFIX):
                model = ModelRoute.model_validate_json(value)
                old = self._model_keys.get(key)
                if old is not None:
                    self._drop_aliases(old)
                    if old != model.name:
                        self.models.pop(old, None)
                self._model_keys[key] = model.name
                self.models[model.name] = model
                for alias in model.aliases:
                    self.aliases[alias] = model.name
                self.prices.put_route(model)
            elif key.startswith(names.SNAPSHOT_BUDGET_PREFIX):
                rule = BudgetRule.model_validate_json(value)
                self._budget_keys[key] = f"{rule.scope}.{rule.scope_id}"
                self.budgets[self._budget_keys[key]] = rule
                self.budgets_version += 1
            elif key.startswith(names.SNAPSHOT_ENDPOINT_PREFIX):
                endpoint = Endpoint.from_route(EndpointRoute.model_validate_json(value))
                self.endpoints[endpoint.slug] = endpoint
        except ValidationError as exc:
            log.error("ignoring malformed snapshot entry %s: %s", key, exc.errors()[:1])

    def on_snapshot_delete(self, key: str) -> None:
        if key.startswith(names.SNAPSHOT_TOKEN_PREFIX):
            self.grants.pop(key[len(names.SNAPSHOT_TOKEN_PREFIX) :], None)
        elif key.startswith(names.SNAPSHOT_MODEL_PREFIX):
            name = self._model_keys.pop(key, None)
            if name is not None:
                self._drop_aliases(name)
                self.models.pop(name, None)
                self.prices.remove_route(name)
        elif key.startswith(names.SNAPSHOT_BUDGET_PREFIX):
            scoped = self._budget_keys.pop(key, None)
            if scoped is not None:
                self.budgets.pop(scoped, None)
                self.budgets_version += 1
        elif key.startswith(names.SNAPSHOT_ENDPOINT_PREFIX):
            slug = key[len(names.SNAPSHOT_ENDPOINT_PREFIX) :]
            for endpoint_slug in [s for s in self.endpoints if names.kv_safe(s) == slug]:
                self.endpoints.pop(endpoint_slug, None)

    def _drop_aliases(self, name: str) -> None:
        model = self.models.get(name)
        for alias in model.aliases if model is not None else ():
            if self.aliases.get(alias) == name:
                del self.aliases[alias]

    def budgets_of(self, grant: TokenGrant) -> list[BudgetRule]:
        """The budgets a request of this grant counts against: its user's, team's and org's."""
        if not self.budgets:
            return []
        found = []
        for key in (f"user.{grant.user_id}", f"team.{grant.team_id}", f"org.{grant.org_id}"):
            rule = self.budgets.get(key)
            if rule is not None:
                found.append(rule)
        return found

    # -- quota bucket ----------------------------------------------------------------------------------

    def on_quota_put(self, key: str, value: bytes) -> None:
        try:
            self.quotas[key] = QuotaDecision.model_validate_json(value)
        except ValidationError as exc:
            log.error("ignoring malformed quota decision %s: %s", key, exc.errors()[:1])

    def on_quota_delete(self, key: str) -> None:
        self.quotas.pop(key, None)

    def quota_in_force(self, grant: TokenGrant, now: datetime | None = None) -> QuotaDecision | None:
        if not self.quotas:
            return None
        now = now or datetime.now(UTC)
        for key in (f"user.{grant.user_id}", f"team.{grant.team_id}", f"org.{grant.org_id}"):
            decision = self.quotas.get(key)
            if decision is not None and decision.until > now:
                return decision
        return None
