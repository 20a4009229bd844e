"""Rules: prices and cost, budgets and periods, what counts as read-only SQL, who sees what."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from accounting_testing import usage_event

from aqueduct_accounting.adapters.price_catalog import load_price_catalog
from aqueduct_accounting.domain.budgets import BudgetRule, Periods, Spend, decide
from aqueduct_accounting.domain.pricing import Price, PriceBook
from aqueduct_accounting.domain.scope import ForbiddenError, UsageFilter, Viewer, scope_predicate
from aqueduct_libs.snapshot import ModelRoute


def test_directory_prices_win_over_the_catalog() -> None:
    book = PriceBook({"gpt-4o-mini": Price(150, 600)})
    assert book.cost_nanos("gpt-4o-mini", 1000, 100) == 150_000 + 60_000

    book.put_route(
        ModelRoute(
            name="gpt-4o-mini",
            endpoint="e",
            upstream_model="gpt-4o-mini",
            input_price_nanos_per_token=1,
            output_price_nanos_per_token=2,
        )
    )
    assert book.cost_nanos("gpt-4o-mini", 1000, 100) == 1200

    book.remove_route("gpt-4o-mini")
    assert book.cost_nanos("gpt-4o-mini", 1000, 100) == 210_000


def test_unpriced_routes_fall_back_to_the_upstream_model_and_provider_prefixes() -> None:
    book = PriceBook({"gpt-4o": Price(2500, 10000)})
    book.put_route(ModelRoute(name="house-model", endpoint="e", upstream_model="openai/gpt-4o"))
    assert book.cost_nanos("house-model", 10, 1) == 35_000
    assert book.cost_nanos("unknown", 10, 1) == 0


def test_fractional_prices_round_once_per_request() -> None:
    assert Price(0.1, 0.4).cost_nanos(1000, 1000) == 500
    # Cached prompt tokens at the cached rate, the rest at the input rate.
    assert Price(100, 0, cached_input_nanos_per_token=10).cost_nanos(1000, 0, cached_tokens=400) == 64_000


def test_the_shipped_price_map_is_read_without_importing_litellm() -> None:
    import sys

    catalog = load_price_catalog()
    assert catalog["gpt-4o-mini"].input_nanos_per_token == pytest.approx(150)
    assert catalog["gpt-4o-mini"].output_nanos_per_token == pytest.approx(600)
    assert "litellm" not in sys.modules


NOW = datetime(2026, 2, 28, 23, 59, 30, tzinfo=UTC)


def test_periods_are_utc_days_and_months() -> None:
    periods = Periods.containing(NOW)
    assert periods.day_start == datetime(2026, 2, 28, tzinfo=UTC)
    assert periods.day_end == datetime(2026, 3, 1, tzinfo=UTC)
    assert periods.month_start == datetime(2026, 2, 1, tzinfo=UTC)
    assert periods.month_end == datetime(2026, 3, 1, tzinfo=UTC)
    assert Periods.containing(datetime(2026, 12, 31, 12, tzinfo=UTC)).month_end == datetime(
        2027, 1, 1, tzinfo=UTC
    )


def test_a_budget_is_used_up_when_spend_reaches_it() -> None:
    budget = BudgetRule(scope="team", scope_id="t1", daily_nanos=5 * 10**9, monthly_nanos=100 * 10**9)
    periods = Periods.containing(NOW)

    assert decide(budget, Spend(day_nanos=4_999_999_999), periods, NOW) is None
    daily = decide(budget, Spend(day_nanos=5_000_000_000), periods, NOW)
    assert daily is not None and daily.period == "day" and daily.until == periods.day_end
    assert daily.budget == "team daily budget of $5.00"
    monthly = decide(budget, Spend(day_nanos=6 * 10**9, month_nanos=100 * 10**9), periods, NOW)
    assert monthly is not None and monthly.period == "month" and monthly.until == periods.month_end


def test_small_budgets_read_with_their_own_precision() -> None:
    budget = BudgetRule(scope="user", scope_id="u1", daily_nanos=2_000_000)  # $0.002
    decision = decide(budget, Spend(day_nanos=2_000_000), Periods.containing(NOW), NOW)
    assert decision is not None and decision.budget == "user daily budget of $0.002"


def test_token_budgets_and_empty_budgets() -> None:
    budget = BudgetRule(scope="user", scope_id="u1", daily_tokens=1000)
    assert decide(budget, Spend(day_tokens=1000), Periods.containing(NOW), NOW) is not None
    assert decide(budget, Spend(day_tokens=999, month_tokens=10**9), Periods.containing(NOW), NOW) is None
    assert BudgetRule(scope="org", scope_id="o1").is_empty


def test_running_totals_only_grow_within_a_period() -> None:
    spend = Spend().plus(100, 10, today=True).plus(50, 5, today=False)
    assert spend == Spend(day_nanos=100, day_tokens=10, month_nanos=150, month_tokens=15)
    # A reconciliation from ClickHouse that has not stored the latest events yet takes nothing back.
    assert spend.at_least(Spend(day_nanos=90, month_nanos=200)) == Spend(100, 10, 200, 15)


# Which statements ad-hoc SQL accepts is decided on ClickHouse's own parse of the query (the engine
# is needed): test_accounting_sql_escapes.py runs the allowed kinds and 70+ escape attempts.


def test_the_visibility_rule_is_always_applied() -> None:
    member = Viewer("u1", org_id="o1", teams=("t1",))
    team_admin = Viewer("u2", org_id="o1", teams=("t1",), team_admin=("t1",))
    admin = Viewer("root", admin=True)

    where, params = scope_predicate(member, UsageFilter(team_id="t1"))
    assert "user_id = {scope_user:String}" in where and params["scope_user"] == "u1"
    where, params = scope_predicate(team_admin, UsageFilter())
    assert params["scope_teams"] == ["t1"]
    assert scope_predicate(admin, UsageFilter()) == ("1", {})
    for viewer, wanted in [
        (member, UsageFilter(team_id="t2")),
        (member, UsageFilter(user_id="u9")),
        (member, UsageFilter(org_id="o2")),
        (team_admin, UsageFilter(team_id="t2")),
    ]:
        with pytest.raises(ForbiddenError):
            scope_predicate(viewer, wanted)


def test_windows_are_cut_into_exact_roll_up_segments() -> None:
    from aqueduct_accounting.domain.segments import segments

    t = datetime(2026, 3, 2, 9, 17, 30, tzinfo=UTC)
    cut = segments(t, datetime(2026, 3, 5, 11, 42, 15, tzinfo=UTC))
    assert [(s.level, s.since.isoformat(), s.until.isoformat()) for s in cut] == [
        ("raw", "2026-03-02T09:17:30+00:00", "2026-03-02T09:18:00+00:00"),
        ("minute", "2026-03-02T09:18:00+00:00", "2026-03-02T10:00:00+00:00"),
        ("hour", "2026-03-02T10:00:00+00:00", "2026-03-03T00:00:00+00:00"),
        ("day", "2026-03-03T00:00:00+00:00", "2026-03-05T00:00:00+00:00"),
        ("hour", "2026-03-05T00:00:00+00:00", "2026-03-05T11:00:00+00:00"),
        ("minute", "2026-03-05T11:00:00+00:00", "2026-03-05T11:42:00+00:00"),
        ("raw", "2026-03-05T11:42:00+00:00", "2026-03-05T11:42:15+00:00"),
    ]
    assert [s.level for s in segments(t, t.replace(hour=12), coarsest="minute")] == ["raw", "minute", "raw"]
    assert segments(t, t) == []


def test_a_message_may_carry_one_event_or_an_array_of_them() -> None:
    import orjson
    from accounting_testing import usage_event

    from aqueduct_accounting.domain.usage import InvalidUsageEventError, usage_rows_from_json

    one, two = usage_event(1), usage_event(2)
    single = usage_rows_from_json(one.model_dump_json().encode())
    batch = b"[" + b",".join(e.model_dump_json().encode() for e in (one, two)) + b', {"event_id": "bad"}]'

    assert [r["event_id"] for r in single] == [one.event_id]
    assert [r["event_id"] for r in usage_rows_from_json(batch)] == [one.event_id, two.event_id]
    assert single[0]["occurred_at"] == one.occurred_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
    for unreadable in (
        b"[]",
        b'[{"event_id": "x"}]',
        b"nope",
        orjson.dumps({**orjson.loads(one.model_dump_json()), "input_tokens": "5"}),
    ):
        with pytest.raises(InvalidUsageEventError):
            usage_rows_from_json(unreadable)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"event_id": "x"}', "not a usage event: the field token_id is missing"),
        (b'[{"bad": 1}]', "not a usage event: the field event_id is missing"),
        (b"5", "not a usage event: a JSON object was expected, not int"),
        (b'["text"]', "not a usage event: a JSON object was expected, not str"),
        (b'{"schema_version": 2}', "not a version 1 usage event"),
    ]
    + [
        (
            orjson.dumps({**orjson.loads(usage_event(1).model_dump_json()), "occurred_at": when}),
            f"not a usage event: occurred_at {when!r} is not an ISO 8601 time such as 2026-12-05T14:00:00Z",
        )
        for when in ("yesterday", 12345, None)
    ],
)
def test_the_reason_a_dead_letter_gives_reads_as_a_sentence(payload: bytes, reason: str) -> None:
    """An Admin reads it on the Dead letters page and in `aqueduct dead-letters list`: no KeyError('...')."""
    from aqueduct_accounting.domain.usage import InvalidUsageEventError, usage_message_from_json

    try:
        message = usage_message_from_json(payload)
    except InvalidUsageEventError as exc:
        said = str(exc)
    else:
        said = message.rejected[0].reason
    assert said == reason


def test_occurred_at_fast_path_matches_parsing():
    """The sliced form of UTC timestamps equals the parsed one, for orjson's and pydantic's spellings."""
    import random
    from datetime import UTC, datetime, timedelta

    import orjson

    from aqueduct_accounting.domain.usage import _occurred_at, clickhouse_time

    rng = random.Random(7)
    for _ in range(2000):
        moment = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10**15))
        expected = clickhouse_time(moment)
        orjson_text = orjson.loads(orjson.dumps(moment))
        assert _occurred_at(orjson_text) == expected
        assert _occurred_at(moment.isoformat().replace("+00:00", "Z")) == expected
    assert _occurred_at("2026-01-01T01:01:01.500000+02:00") == "2025-12-31 23:01:01.500"
    assert _occurred_at("2026-01-01T01:01:01+00:00") == "2026-01-01 01:01:01.000"
    assert _occurred_at("2026-01-01T01:01:01.123456-05:00") == "2026-01-01 06:01:01.123"
    with pytest.raises(ValueError):
        _occurred_at("2026-13-01T01:01:01.123456+00:00")


def _odd_values(base: dict[str, Any]) -> list[Any]:
    """Values to put in an event's fields: of every JSON type, at and past every bound, odd times."""
    from aqueduct_libs import bounds

    big = bounds.MAX_TOKENS
    return [
        None, "", "x", "é" * bounds.MAX_TEXT_LENGTH, "😀" * (bounds.MAX_TEXT_LENGTH + 1), "x" * bounds.MAX_TEXT_LENGTH,
        "x" * (bounds.MAX_TEXT_LENGTH + 1), "\u0000\u2028\ufeff", 0, -1, 1, 1.0, -0.0, True, False, 1.5, 1e308,
        float("nan"), float("inf"), 99, 100, 200.0, 599, 600, big, big + 1, float(big), 2**63, 2**64, 2**70, -(2**70),
        bounds.MAX_LATENCY_MS, bounds.MAX_LATENCY_MS + 1, int(bounds.MAX_LATENCY_MS), int(bounds.MAX_LATENCY_MS) + 1,
        [], {}, [True], {"a": 1}, "model", "mcp", "batch", "other", "Model", "1999-12-31T23:59:59.999999+00:00",
        "2000-01-01T00:00:00.000000+00:00", "2000-01-01T00:00:00Z", "2030-01-01T00:00:00Z", base["occurred_at"],
        base["occurred_at"].replace("Z", "+00:00"), base["occurred_at"].rstrip("Z"),
        base["occurred_at"].replace("Z", "+05:30"), base["occurred_at"].replace("Z", "-08:00"),
        "2026-02-30T00:00:00Z", "2026-13-01T00:00:00+00:00", "2026-06-01T24:00:00Z", "2026-06-01", "2026-06-01 10:00:00Z",
        "2026-06-01T10:00:00.1234567Z", "not a time", 2,
    ]  # fmt: skip


def _altered(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy of ``event`` with one to three fields dropped or set to odd values: its own fields, those it
    may lack, and one unknown."""
    from aqueduct_accounting.domain.usage import TOKEN_COUNTS

    extra = ["schema_version", "alias", "request_id", "ttft_ms", "streamed", "cut_short", "extra"]
    names, odd_values = [*event, *TOKEN_COUNTS, *extra], _odd_values(event)
    event = dict(event)
    for _ in range(rng.choice((1, 1, 2, 3))):
        name = rng.choice(names)
        if rng.random() < 0.15:
            event.pop(name, None)
        else:
            event[name] = rng.choice(odd_values)
    return event


def test_the_fast_reading_of_an_event_is_the_checked_one():
    """``_fast_row`` (the hot path) gives the row ``_checked_row`` gives, or declines (None or a lookup
    error) exactly where ``_checked_row`` refuses: over events with fields missing, of other types and
    at and past every bound."""
    import random

    import orjson
    from accounting_testing import usage_event

    from aqueduct_accounting.domain.usage import (
        InvalidUsageEventError,
        _checked_row,
        _fast_row,
        _latest,
    )

    base = orjson.loads(usage_event(1).model_dump_json())
    rng = random.Random(15)
    latest = _latest()
    accepted = 0
    for case in range(6000):
        event = _altered(base, rng)
        for bound in (None, latest):
            try:
                expected = _checked_row(event, bound)
            except (InvalidUsageEventError, TypeError):
                expected = None
            try:
                fast = _fast_row(event, bound)
            except (KeyError, TypeError, ValueError, AttributeError):
                fast = None
            accepted += expected is not None
            if fast is not None or expected is not None:
                assert fast == expected, (case, event)
                assert list(fast) == list(expected)
    assert 1000 < accepted < 11000  # both kinds of case, many of each
    assert _fast_row(base, None) == _checked_row(base, None)
    assert _fast_row([base], None) is None


def _old_message_reading(payload: bytes, **kwargs: object) -> object:
    """What ``usage_message_from_json`` gives without its msgspec path: a ``UsageMessage`` or the refusal."""
    from unittest import mock

    from aqueduct_accounting.domain import usage

    with mock.patch.object(usage, "_message_rows", return_value=None):
        return _message_reading(payload, **kwargs)


def _message_reading(payload: bytes, **kwargs: object) -> object:
    from aqueduct_accounting.domain.usage import usage_message_from_json

    try:
        message = usage_message_from_json(payload, **kwargs)  # type: ignore[arg-type]
    except Exception as exc:  # InvalidUsageEventError; TypeError for an unhashable kind (the old way's own)
        return (type(exc), str(exc))
    # the values' types too (1 == 1.0 == True): what is inserted must not change
    return (
        [[(name, type(value), value) for name, value in row.items()] for row in message.rows],
        message.rejected,
    )


def test_the_msgspec_reading_of_a_message_is_the_old_one():
    """``usage_message_from_json`` reads a message whose every event is good with msgspec (``_message_rows``),
    and any other the old way: over single events and arrays mixing good and bad events (fields missing,
    extra, duplicated, of other types, at and past every bound, odd JSON), the rows and the refusals (index,
    text, reason) are those of the old way alone, types of values included."""
    import json
    import random

    from accounting_testing import usage_event

    from aqueduct_accounting.domain.usage import _message_rows

    # occurred_at as pydantic writes it ("...Z"), and as orjson does ("...+00:00")
    good = [orjson.loads(usage_event(i).model_dump_json()) for i in range(4)]
    good += [orjson.loads(orjson.dumps(usage_event(i, alias="a").model_dump())) for i in range(4, 8)]
    base = good[0]

    def altered(rng: random.Random) -> dict[str, object]:
        return _altered(rng.choice(good), rng)

    def text(item: object, rng: random.Random) -> bytes:
        if not isinstance(item, dict) or rng.random() < 0.8:
            # NaN, Infinity and ints past 64 bits included
            return json.dumps(item, ensure_ascii=rng.random() < 0.5).encode()
        spliced = json.dumps(item).encode()[:-1]
        return spliced + rng.choice(
            (
                b', "team_id": "t"}',  # a field twice: the last wins
                b', "status_code": "200"}',
                b', "input_tokens": 1e2}',
                b', "schema_version": 1.0}',
                b', "schema_version": true}',
                b', "event_id": "\xff"}',  # not UTF-8
                b', "route": "\\ud800"}',  # a lone surrogate
                b', "extra": "\xed\xa0\x80"}',
                b', "extra": 1e400}',
                b', "extra": ' + b"[" * 1100 + b"]" * 1100 + b"}",
                b', "streamed": true, "cut_short": true}',
                b', "ev\\u0065nt_id": "escaped"}',
                b', "kind": "mc\\u0070"}',
                b"} trailing",
                b"}",
            )
        )

    def cost(row: dict[str, object]) -> int:  # negative with no input tokens, past the bound above a million
        return (int(row["input_tokens"]) - 1) * 10**12  # type: ignore[call-overload]

    rng = random.Random(16)
    now = datetime.now(UTC)
    fast = 0
    for case in range(4000):
        if rng.random() < 0.3:
            payload = text(altered(rng) if rng.random() < 0.6 else rng.choice(good), rng)
        else:
            items = [
                altered(rng) if rng.random() < 0.25 else rng.choice(good) for _ in range(rng.randint(1, 6))
            ]
            if rng.random() < 0.1:
                items.append(rng.choice(("text", 5, None, [], [base])))
            payload = b"[" + b", ".join(text(item, rng) for item in items) + b"]"
        for kwargs in ({}, {"now": now}, {"cost": cost}):
            expected = _old_message_reading(payload, **kwargs)
            assert _message_reading(payload, **kwargs) == expected, (case, payload)
        fast += _message_rows(payload, None, None) is not None
    assert 800 < fast < 3200  # both ways, many of each
    for payload in (b"[]", b"{}", b"nope", b"5", b"[5]", b"null", b'"x"', b"", b" [ ] "):
        assert _message_reading(payload) == _old_message_reading(payload)
        assert _message_rows(payload, None, None) is None


def test_a_message_of_good_events_is_read_by_msgspec_alone():
    """A proxy's array of 25 events (and a lone event) never reaches the old reading: were the msgspec path to
    decline them, it would silently cost twice the time."""
    from unittest import mock

    from accounting_testing import usage_event

    from aqueduct_accounting.domain import usage
    from aqueduct_libs.events import UsageRecorded

    events = [usage_event(i, ttft_ms=12, latency_ms=30.5 + i, streamed=bool(i % 2)) for i in range(25)]
    array = orjson.dumps([e.model_dump() for e in events])
    prices = PriceBook({"gpt-4o-mini": Price(150, 600)})
    with (
        mock.patch.object(usage, "_priced_row", side_effect=AssertionError("the old reading")),
        mock.patch.object(usage.orjson, "loads", side_effect=AssertionError("the old reading")),
    ):
        message = usage.usage_message_from_json(array, cost=lambda row: usage.row_cost(prices, row))
        lone = usage.usage_message_from_json(events[0].model_dump_json().encode())
    assert [row["event_id"] for row in message.rows] == [e.event_id for e in events]
    assert message.rejected == [] and len(lone.rows) == 1
    assert message.rows[2]["cost_nanos"] == usage.row_cost(prices, message.rows[2]) > 0
    # every field of the contract is known to the msgspec reading (an unknown one sends messages the old way)
    assert set(usage._Event.__struct_fields__) == set(UsageRecorded.model_fields)
