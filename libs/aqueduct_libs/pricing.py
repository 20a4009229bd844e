"""What a request costs, in integer nano-dollars (1e-9 USD): the one pricing rule of the product.

The proxy prices a request's worst case before forwarding it and its real usage after (budgets); accounting
prices every stored usage event. Both call ``PriceBook.cost`` here, so the two can never disagree.

Prices come from the directory's model routes where set; otherwise from a catalog (the price map that
ships with LiteLLM, see ``price_catalog``). Per-token prices may be fractions of a nano-dollar (cheap
models), so the rounding happens once, on the request's total.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from aqueduct_libs.snapshot import ModelRoute

__all__ = [
    "NANOS_PER_USD",
    "Price",
    "PriceBook",
    "TokenClasses",
    "format_usd",
    "format_usd_apart",
    "nanos_to_usd",
    "usd_to_nanos",
]

NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def nanos_to_usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD


def format_usd(nanos: int, *, exact: bool = False) -> str:
    """Dollars a person can read: cents from $1 up, else three significant digits ($0.002, $0.0123),
    never "$0.00" for an amount that is not zero. ``exact``: every digit down to the nano-dollar
    ($0.999999999, $1.25), for amounts that must not read alike (``format_usd_apart``)."""
    sign = "-" if nanos < 0 else ""
    value = Decimal(abs(nanos)) / NANOS_PER_USD
    if exact:
        whole, _, fraction = f"{value:,.9f}".partition(".")
        return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"
    if value >= 1 or value == 0:
        return f"{sign}${value:,.2f}"
    places = min(9, max(2, -value.adjusted() + 2))
    whole, _, fraction = f"{value:.{places}f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{fraction}"


def format_usd_apart(*amounts: int) -> tuple[str, ...]:
    """``format_usd`` of each, or every one exact when two different amounts would read the same
    ("$1.00 left, this request may cost up to $1.00" must not be a refusal's text)."""
    shown = tuple(format_usd(n) for n in amounts)
    if len({s for s in shown}) < len(set(amounts)):
        return tuple(format_usd(n, exact=True) for n in amounts)
    return shown


@dataclass(frozen=True, slots=True)
class TokenClasses:
    """What one request used, in the token classes prices tell apart. New classes (cache writes,
    reasoning tokens) are new fields with a default of 0, priced in ``Price.cost``."""

    input_tokens: int = 0  # every prompt token, cached or not
    output_tokens: int = 0  # every generated token, reasoning included
    cached_tokens: int = 0  # the part of input_tokens read from the provider's prompt cache
    cache_write_5m_tokens: int = 0  # the part of input_tokens written to the cache, kept 5 minutes
    cache_write_1h_tokens: int = 0  # ... kept 1 hour
    reasoning_tokens: int = 0  # the part of output_tokens spent reasoning

    @property
    def total_tokens(self) -> int:
        """What token budgets count."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Price:
    """Nano-dollars per token of each class. A class without a price of its own costs what its whole
    costs: cache reads and writes the input price, reasoning the output price."""

    input_nanos_per_token: float
    output_nanos_per_token: float
    # Where the catalog has a cheaper rate for cached prompt tokens (a subset of the input tokens).
    cached_input_nanos_per_token: float | None = None
    # The most output tokens one answer of the model may hold (the catalog's max_output_tokens): the
    # worst case a budget reserves when a request sets no cap of its own.
    max_output_tokens: int | None = None
    cache_write_nanos_per_token: float | None = None  # written to the cache, kept 5 minutes
    cache_write_1h_nanos_per_token: float | None = None
    reasoning_nanos_per_token: float | None = None

    def cost(self, usage: TokenClasses) -> int:
        """Each token class at its price, rounded once on the total. The parts are clamped to their
        whole (cache reads, then 5-minute, then 1-hour writes within the input; reasoning within the
        output), so a provider's inconsistent report neither charges a token twice nor goes negative."""
        return self.cost_of(
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
            usage.reasoning_tokens,
        )

    def cost_of(
        self,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int = 0,
        cache_write_5m_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> int:
        """``cost`` of the token classes given one by one (``TokenClasses``' fields, in their order):
        accounting prices every stored event with it, without building a ``TokenClasses`` each."""
        base_in = self.input_nanos_per_token
        if type(base_in) is float and not (
            cached_tokens or cache_write_5m_tokens or cache_write_1h_tokens or reasoning_tokens
        ):
            # Plain input and output (most events): the sum below without its zero terms, the same float
            # (adding 0 to a float at or above zero leaves it as it is).
            return round(max(input_tokens, 0) * base_in + max(output_tokens, 0) * self.output_nanos_per_token)
        total_in = max(input_tokens, 0)
        cached = min(max(cached_tokens, 0), total_in)
        five = min(max(cache_write_5m_tokens, 0), total_in - cached)
        hour = min(max(cache_write_1h_tokens, 0), total_in - cached - five)
        total_out = max(output_tokens, 0)
        reasoning = min(max(reasoning_tokens, 0), total_out)
        base_out = self.output_nanos_per_token
        total = (
            (total_in - cached - five - hour) * base_in
            + cached * _or(self.cached_input_nanos_per_token, base_in)
            + five * _or(self.cache_write_nanos_per_token, base_in)
            + hour * _or(self.cache_write_1h_nanos_per_token, base_in)
            + (total_out - reasoning) * base_out
            + reasoning * _or(self.reasoning_nanos_per_token, base_out)
        )
        return round(total)

    def cost_nanos(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        return self.cost(TokenClasses(input_tokens, output_tokens, cached_tokens))


def _or(price: float | None, base: float) -> float:
    return base if price is None else price


def _nanos(value: int | None) -> float | None:
    return None if value is None else float(value)


class PriceBook:
    """Model name -> price: the directory's route prices first, then the catalog by name or upstream id."""

    def __init__(self, catalog: Mapping[str, Price] | None = None) -> None:
        self._catalog = dict(catalog or {})
        self._routes: dict[str, ModelRoute] = {}
        self._cache: dict[str, Price | None] = {}  # the request path asks for the same few models

    def put_route(self, route: ModelRoute) -> None:
        self._routes[route.name] = route
        self._cache.clear()

    def remove_route(self, name: str) -> None:
        self._routes.pop(name, None)
        self._cache.clear()

    def _from_catalog(self, name: str) -> Price | None:
        if not name:
            return None
        if name in self._catalog:
            return self._catalog[name]
        # "openai/gpt-4o-mini" in a route is "gpt-4o-mini" in the catalog, and the other way round.
        _, _, bare = name.partition("/")
        return self._catalog.get(bare) if bare else None

    def price_for(self, model: str) -> Price | None:
        if model in self._cache:
            return self._cache[model]
        price = self._price_for(model)
        if len(self._cache) < 10_000:
            self._cache[model] = price
        return price

    def _price_for(self, model: str) -> Price | None:
        route = self._routes.get(model)
        if route is not None:
            listed = self._from_catalog(route.upstream_model) or self._from_catalog(model)
            if (
                route.input_price_nanos_per_token is not None
                or route.output_price_nanos_per_token is not None
            ):
                return Price(
                    float(route.input_price_nanos_per_token or 0),
                    float(route.output_price_nanos_per_token or 0),
                    _nanos(route.cached_input_price_nanos_per_token),
                    max_output_tokens=listed.max_output_tokens if listed else None,
                    cache_write_nanos_per_token=_nanos(route.cache_write_price_nanos_per_token),
                    cache_write_1h_nanos_per_token=_nanos(route.cache_write_1h_price_nanos_per_token),
                    reasoning_nanos_per_token=_nanos(route.reasoning_price_nanos_per_token),
                )
            if listed is not None:
                return listed
        return self._from_catalog(model)

    def cost(self, model: str, usage: TokenClasses) -> int:
        """Zero for a model nobody priced: usage is still counted in tokens."""
        price = self.price_for(model)
        return price.cost(usage) if price else 0

    def cost_nanos(self, model: str, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        return self.cost(model, TokenClasses(input_tokens, output_tokens, cached_tokens))
