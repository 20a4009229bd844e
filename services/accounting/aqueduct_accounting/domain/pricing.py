"""What a request costs, in integer nano-dollars (1e-9 USD).

Prices come from the directory's model routes where set; otherwise from a catalog (the price map that
ships with LiteLLM). Per-token prices may be fractions of a nano-dollar (cheap models), so the rounding
happens once, on the request's total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aqueduct_libs.snapshot import ModelRoute

__all__ = [
    "NANOS_PER_USD",
    "Price",
    "PriceBook",
    "TokenClasses",
    "cost_nanos",
    "nanos_to_usd",
    "usd_to_nanos",
]

NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def nanos_to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


@dataclass(frozen=True, slots=True)
class TokenClasses:
    """A request's tokens by class, as usage events count them: ``input`` is every prompt token, of
    which ``cached`` were read from the prompt cache and ``cache_write_5m``/``_1h`` written to it;
    ``output`` is every generated token, of which ``reasoning`` were reasoning."""

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Price:
    """Nano-dollars per token of each class. A class without a price of its own costs what its whole
    costs: cache reads and writes the input price, reasoning the output price."""

    input_nanos_per_token: float
    output_nanos_per_token: float
    cached_input_nanos_per_token: float | None = None
    cache_write_nanos_per_token: float | None = None  # written to the cache, kept 5 minutes
    cache_write_1h_nanos_per_token: float | None = None
    reasoning_nanos_per_token: float | None = None

    def cost_nanos(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        return cost_nanos(self, TokenClasses(input_tokens, output_tokens, cached_tokens))


def _or(price: float | None, base: float) -> float:
    return base if price is None else price


def cost_nanos(price: Price, tokens: TokenClasses) -> int:
    """The cost rule: each token class at its price, rounded once on the total.

    The parts are clamped to their whole (cached reads, then 5-minute, then 1-hour cache writes within
    the input; reasoning within the output), so a provider's inconsistent report can neither charge a
    token twice nor make a negative charge.
    """
    total_in = max(tokens.input, 0)
    cached = min(max(tokens.cached, 0), total_in)
    five = min(max(tokens.cache_write_5m, 0), total_in - cached)
    hour = min(max(tokens.cache_write_1h, 0), total_in - cached - five)
    total_out = max(tokens.output, 0)
    reasoning = min(max(tokens.reasoning, 0), total_out)
    base_in, base_out = price.input_nanos_per_token, price.output_nanos_per_token
    total = (
        (total_in - cached - five - hour) * base_in
        + cached * _or(price.cached_input_nanos_per_token, base_in)
        + five * _or(price.cache_write_nanos_per_token, base_in)
        + hour * _or(price.cache_write_1h_nanos_per_token, base_in)
        + (total_out - reasoning) * base_out
        + reasoning * _or(price.reasoning_nanos_per_token, base_out)
    )
    return round(total)


def _nanos(value: int | None) -> float | None:
    return None if value is None else float(value)


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
                    _nanos(route.cached_input_price_nanos_per_token),
                    _nanos(route.cache_write_price_nanos_per_token),
                    _nanos(route.cache_write_1h_price_nanos_per_token),
                    _nanos(route.reasoning_price_nanos_per_token),
                )
            found = self._from_catalog(route.upstream_model)
            if found is not None:
                return found
        return self._from_catalog(model)

    def cost_nanos(self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Zero for a model nobody priced: usage is still counted in tokens."""
        return self.cost_of(model, TokenClasses(input_tokens, output_tokens, cached_tokens))

    def cost_of(self, model: str, tokens: TokenClasses) -> int:
        """Every token class at its price; zero for a model nobody priced."""
        price = self.price_for(model)
        return cost_nanos(price, tokens) if price else 0
