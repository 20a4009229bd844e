"""The one pricing rule (proxy budgets and accounting both use it), money as people read it, and the
budget periods both sides key their counters by."""

from __future__ import annotations

from datetime import UTC, datetime

from aqueduct_libs.budgets import counter_key, limits_of, periods_at
from aqueduct_libs.price_catalog import load_price_catalog
from aqueduct_libs.pricing import Price, PriceBook, TokenClasses, format_usd, format_usd_apart
from aqueduct_libs.snapshot import BudgetRule, ModelRoute


def test_small_amounts_are_never_shown_as_zero() -> None:
    assert format_usd(0) == "$0.00"
    assert format_usd(2_000_000) == "$0.002"
    assert format_usd(50_000_000) == "$0.05"
    assert format_usd(500_000_000) == "$0.50"
    assert format_usd(12_345_678) == "$0.0123"
    assert format_usd(1) == "$0.000000001"
    assert format_usd(1_234_567_000_000) == "$1,234.57"
    assert format_usd(-2_000_000) == "-$0.002"


def test_amounts_that_differ_never_read_alike() -> None:
    # $0.999999999 rounds to "$1.00": beside a $1.00 it would say "$1.00 left, may cost up to $1.00".
    assert format_usd(999_999_999) == format_usd(10**9) == "$1.00"
    assert format_usd_apart(999_999_999, 10**9) == ("$0.999999999", "$1.00")
    assert format_usd_apart(1_234_567_891_000, 1_234_567_000_000) == ("$1,234.567891", "$1,234.567")
    assert format_usd_apart(2_000_000, 50_000_000) == ("$0.002", "$0.05")  # apart already: as usual
    assert format_usd_apart(10**9, 10**9, 0) == ("$1.00", "$1.00", "$0.00")  # the same amount twice is fine


def test_cost_of_the_token_classes_rounds_once() -> None:
    price = Price(0.15, 0.6, cached_input_nanos_per_token=0.075)
    # 1,000 input of which 400 cached, 10 output: 600 x 0.15 + 400 x 0.075 + 10 x 0.6 = 126
    assert price.cost(TokenClasses(1000, 10, 400)) == 126
    assert Price(1, 2).cost(TokenClasses(10, 5, cached_tokens=10)) == 20  # no cached rate: full price
    assert price.cost_of(1000, 10, 400) == 126 and Price(1, 2).cost_of(10, 5, 10) == 20
    assert TokenClasses(3, 4).total_tokens == 7


def test_directory_prices_win_and_the_catalog_still_gives_the_maximum_output() -> None:
    catalog = load_price_catalog()
    assert catalog["gpt-4o-mini"].max_output_tokens
    book = PriceBook(catalog)
    book.put_route(
        ModelRoute(
            name="mini",
            endpoint="e",
            upstream_model="gpt-4o-mini",
            input_price_nanos_per_token=1000,
            output_price_nanos_per_token=2000,
        )
    )
    price = book.price_for("mini")
    assert price is not None and (price.input_nanos_per_token, price.output_nanos_per_token) == (1000, 2000)
    assert price.max_output_tokens == catalog["gpt-4o-mini"].max_output_tokens
    assert book.cost("mini", TokenClasses(10, 1)) == 12_000
    book.remove_route("mini")
    assert book.price_for("mini") is None and book.cost("mini", TokenClasses(10, 1)) == 0


def test_periods_and_counter_keys_are_utc_days_and_months() -> None:
    day, month = periods_at(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert (day.label, month.label) == ("d20261231", "m202612")
    assert day.end == month.end == datetime(2027, 1, 1, tzinfo=UTC)
    rule = BudgetRule(scope="team", scope_id="t1", daily_nanos=5, monthly_tokens=7)
    assert (limits_of(rule, day), limits_of(rule, month)) == ((5, None), (None, 7))
    # One hash tag for every budget key: a request's user, team and org counters change in one script.
    assert counter_key("team", "t1", day) == "aq:budget:{aqb}:team:t1:d20261231"


def test_plain_input_and_output_cost_what_the_whole_sum_gives() -> None:
    """``cost_of``'s short way (no cache or reasoning tokens) is the float the sum of every class gives."""
    import random

    def whole_sum(price: Price, tokens_in: int, tokens_out: int) -> int:
        base_in, base_out = price.input_nanos_per_token, price.output_nanos_per_token
        return round(
            max(tokens_in, 0) * base_in
            + 0 * (price.cached_input_nanos_per_token or base_in)
            + 0 * (price.cache_write_nanos_per_token or base_in)
            + 0 * (price.cache_write_1h_nanos_per_token or base_in)
            + max(tokens_out, 0) * base_out
            + 0 * (price.reasoning_nanos_per_token or base_out)
        )

    rng = random.Random(15)
    for _ in range(20_000):
        price = Price(
            rng.choice((0.0, 0.1, 150.0, 2.5e3, 1e7, rng.uniform(0, 1e7))),
            rng.choice((0.0, 0.6, 600.0, 1e4, 1e7, rng.uniform(0, 1e7))),
            rng.choice((None, 0.0, 75.0)),
            cache_write_nanos_per_token=rng.choice((None, 3.75e3)),
            reasoning_nanos_per_token=rng.choice((None, 1.2e4)),
        )
        tokens_in = rng.choice((0, 1, -5, 10**9, rng.randrange(10**9)))
        tokens_out = rng.choice((0, 1, -5, 10**9, rng.randrange(10**9)))
        assert price.cost_of(tokens_in, tokens_out) == whole_sum(price, tokens_in, tokens_out)
    assert Price(1.0, 2.0).cost_of(10, 10, cached_tokens=-1) == 30  # a negative class: the long way
