"""What a request costs: the shared rule in ``aqueduct_libs.pricing`` (the proxy prices budgets with the
same code), re-exported under accounting's own name."""

from __future__ import annotations

from aqueduct_libs.pricing import (
    NANOS_PER_USD,
    Price,
    PriceBook,
    TokenClasses,
    format_usd,
    nanos_to_usd,
    usd_to_nanos,
)

__all__ = [
    "NANOS_PER_USD",
    "Price",
    "PriceBook",
    "TokenClasses",
    "format_usd",
    "nanos_to_usd",
    "usd_to_nanos",
]
