"""What a request costs, in integer nano-dollars (1e-9 USD).

Prices come from the directory's model routes where set; otherwise from a catalog (the price map that
ships with LiteLLM). Per-token prices may be fractions of a nano-dollar (cheap models), so the rounding
happens once, on the request's total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aqueduct_libs.snapshot import ModelRoute

__all__ = ["NANOS_PER_USD", "Price", "PriceBook", "nanos_to_usd", "usd_to_nanos"]

NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def nanos_to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


@dataclass(frozen=True)
class Price:
    input_nanos_per_token: float
    output_nanos_per_token: float
    # Where the catalog has a cheaper rate for cached prompt tokens (a subset of the input tokens).
    cached_input_nanos_per_token: float | None = None

    def cost_nanos(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        cached = (
            min(max(cached_tokens, 0), input_tokens) if self.cached_input_nanos_per_token is not None else 0
        )
        total = (
            (input_tokens - cached) * self.input_nanos_per_token
            + cached * (self.cached_input_nanos_per_token or 0.0)
            + output_tokens * self.output_nanos_per_token
        )
        return round(total)


class PriceBook:
    """Model name -> price: the directory's route prices first, then the catalog by name or upstream id."""

    def __init__(self, catalog: Mapping[str, Price] | None = None) -> None:
        self._catalog = dict(catalog or {})
        self._routes: dict[str, ModelRoute] = {}

    def put_route(self, route: ModelRoute) -> None:
        self._routes[route.name] = route

    def remove_route(self, name: str) -> None:
        self._routes.pop(name, None)

    def _from_catalog(self, name: str) -> Price | None:
        if not name:
            return None
        if name in self._catalog:
            return self._catalog[name]
        # "openai/gpt-4o-mini" in a route is "gpt-4o-mini" in the catalog, and the other way round.
        _, _, bare = name.partition("/")
        return self._catalog.get(bare) if bare else None

    def price_for(self, model: str) -> Price | None:
        route = self._routes.get(model)
        if route is not None:
            if (
                route.input_price_nanos_per_token is not None
                or route.output_price_nanos_per_token is not None
            ):
                return Price(
                    float(route.input_price_nanos_per_token or 0),
                    float(route.output_price_nanos_per_token or 0),
                )
            found = self._from_catalog(route.upstream_model)
            if found is not None:
                return found
        return self._from_catalog(model)

    def cost_nanos(self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Zero for a model nobody priced: usage is still counted in tokens."""
        price = self.price_for(model)
        return price.cost_nanos(input_tokens, output_tokens, cached_tokens) if price else 0
