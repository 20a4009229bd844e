"""The cost rule over every token class, against nano-dollars worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

from aqueduct_accounting.adapters.price_catalog import load_price_catalog
from aqueduct_accounting.domain.pricing import Price, PriceBook, TokenClasses
from aqueduct_accounting.domain.usage import token_classes, usage_row
from aqueduct_libs.events import UsageRecorded
from aqueduct_libs.snapshot import ModelRoute


def _cost(price: Price, tokens: TokenClasses) -> int:
    return price.cost(tokens)


# Anthropic-like: input 3000, output 15000, read 300, write 5 min 3750, write 1 h 6000 (nanos per token).
CLAUDE = Price(3000, 15000, 300, cache_write_nanos_per_token=3750, cache_write_1h_nanos_per_token=6000)


def test_each_class_at_its_price() -> None:
    # 100 prompt tokens: 50 read, 20 written for 5 minutes, 10 for an hour, 20 fresh; 40 output.
    tokens = TokenClasses(
        input_tokens=100,
        output_tokens=40,
        cached_tokens=50,
        cache_write_5m_tokens=20,
        cache_write_1h_tokens=10,
    )
    assert _cost(CLAUDE, tokens) == 20 * 3000 + 50 * 300 + 20 * 3750 + 10 * 6000 + 40 * 15000
    # Reasoning at its own price, the rest of the output at the output price.
    openai_like = Price(2000, 10000, 500, reasoning_nanos_per_token=20000)
    assert (
        _cost(openai_like, TokenClasses(10, 7, 6, reasoning_tokens=3))
        == 4 * 2000 + 6 * 500 + 4 * 10000 + 3 * 20000
    )


def test_a_class_without_a_price_costs_what_its_whole_costs() -> None:
    plain = Price(1000, 4000)
    tokens = TokenClasses(
        input_tokens=30,
        output_tokens=10,
        cached_tokens=10,
        cache_write_5m_tokens=5,
        cache_write_1h_tokens=5,
        reasoning_tokens=6,
    )
    assert _cost(plain, tokens) == 30 * 1000 + 10 * 4000
    assert plain.cost_nanos(30, 10, 10) == 30 * 1000 + 10 * 4000  # the older entry point agrees


def test_inconsistent_reports_neither_double_charge_nor_go_negative() -> None:
    # More cached and written than the whole prompt: the parts are clamped to it, in order.
    tokens = TokenClasses(
        input_tokens=10,
        output_tokens=5,
        cached_tokens=8,
        cache_write_5m_tokens=8,
        cache_write_1h_tokens=8,
        reasoning_tokens=9,
    )
    assert _cost(CLAUDE, tokens) == 8 * 300 + 2 * 3750 + 5 * 15000
    assert _cost(CLAUDE, TokenClasses(input_tokens=-5, output_tokens=-1, cached_tokens=-3)) == 0


def test_a_cache_write_heavy_request() -> None:
    # Claude Code's first turn: a 30,000-token system prompt written for an hour, 12 fresh, 300 output.
    tokens = TokenClasses(input_tokens=30_012, output_tokens=300, cache_write_1h_tokens=30_000)
    assert _cost(CLAUDE, tokens) == 12 * 3000 + 30_000 * 6000 + 300 * 15000 == 184_536_000


def test_route_prices_and_the_litellm_map_feed_the_classes(tmp_path: Path) -> None:
    price_map = tmp_path / "prices.json"
    price_map.write_text(
        json.dumps(
            {
                "claude-x": {
                    "input_cost_per_token": 3e-06,
                    "output_cost_per_token": 1.5e-05,
                    "cache_read_input_token_cost": 3e-07,
                    "cache_creation_input_token_cost": 3.75e-06,
                    "cache_creation_input_token_cost_above_1hr": 6e-06,
                },
                "o-mini": {
                    "input_cost_per_token": 1e-06,
                    "output_cost_per_token": 4e-06,
                    "output_cost_per_reasoning_token": 8e-06,
                },
            }
        )
    )
    book = PriceBook(load_price_catalog(price_map))
    tokens = TokenClasses(
        input_tokens=100,
        output_tokens=40,
        cached_tokens=50,
        cache_write_5m_tokens=20,
        cache_write_1h_tokens=10,
    )
    assert book.cost("claude-x", tokens) == _cost(CLAUDE, tokens)
    assert book.cost("o-mini", TokenClasses(10, 5, reasoning_tokens=2)) == 10 * 1000 + 3 * 4000 + 2 * 8000
    book.put_route(
        ModelRoute(
            name="mine", endpoint="e", upstream_model="claude-x",
            input_price_nanos_per_token=1000, output_price_nanos_per_token=2000,
            cache_write_1h_price_nanos_per_token=2500,
        )
    )  # fmt: skip
    # The model's own prices win over the map; an unpriced class falls back to its whole's price.
    assert book.cost("mine", tokens) == 20 * 1000 + 50 * 1000 + 20 * 1000 + 10 * 2500 + 40 * 2000
    assert book.cost("nobody-priced-this", tokens) == 0


def test_an_events_classes_reach_the_rule() -> None:
    event = UsageRecorded(
        token_id="t", user_id="u", org_id="o", endpoint="e", model="m", route="/v1/messages", status_code=200,
        input_tokens=100, output_tokens=40, cached_tokens=50, cache_write_5m_tokens=20, cache_write_1h_tokens=10,
        reasoning_tokens=0, alias="claude-sonnet-4-5",
    )  # fmt: skip
    row = usage_row(event)
    assert row["alias"] == "claude-sonnet-4-5"
    assert token_classes(row) == TokenClasses(100, 40, 50, 20, 10, 0)
    older = usage_row(
        UsageRecorded(
            token_id="t", user_id="u", org_id="o", endpoint="e", model="m", route="r", status_code=200
        )
    )
    assert (older["cache_write_5m_tokens"], older["reasoning_tokens"], older["alias"]) == (0, 0, "")


def test_each_event_is_priced_as_the_cost_rule_prices_it() -> None:
    """``row_cost`` (the price of every stored event, without a ``TokenClasses``) is ``PriceBook.cost`` of
    the row's token classes, for every class, for a route's own prices and for a model nobody priced."""
    from aqueduct_accounting.domain.usage import row_cost

    book = PriceBook({"claude": CLAUDE, "o1": Price(2000, 10000, 500, reasoning_nanos_per_token=20000)})
    book.put_route(
        ModelRoute(name="mine", endpoint="e", upstream_model="claude", input_price_nanos_per_token=7)
    )
    counts = (0, 1, 3, 10, 997)
    seen = set()
    for model in ("claude", "o1", "mine", "nobody's"):
        for i, (a, b, c, d, e, f) in enumerate(
            zip(
                counts * 7,
                counts[1:] * 7,
                counts[2:] * 7,
                counts * 7,
                counts[3:] * 7,
                counts[::-1] * 7,
                strict=False,
            )
        ):
            row = {
                "model": model,
                "input_tokens": a * 5 + i,
                "output_tokens": b,
                "cached_tokens": c,
                "cache_write_5m_tokens": d,
                "cache_write_1h_tokens": e,
                "reasoning_tokens": f,
            }
            assert row_cost(book, row) == book.cost(model, token_classes(row)), row
            seen.add(row_cost(book, row) > 0)
    assert seen == {True, False}
