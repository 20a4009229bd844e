"""Which budget counters a request counts against, as the hot path finds them: looked up once per user,
team and org and kept, yet a budget added, changed or removed in the snapshot applies to the very next
request, and a new day or month to the first request in it (no Valkey needed: nothing is reserved)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aqueduct_libs import names
from aqueduct_libs.snapshot import BudgetRule, Limits, TokenGrant
from aqueduct_proxy.adapters.budget_store import BudgetRefusal
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.domain.budgets import budget_counters, refusal_message
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.metrics import ProxyMetrics

NOW = datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC)
GRANT = TokenGrant(
    token_id="tok", token_hash="hash", name="t", user_id="u1", team_id="t1", org_id="o1", limits=Limits()
)


class _Store:
    """What ``Budgeting`` reads of a store when it only looks counters up."""

    counted: dict[str, list[int]] = {}


def _put(snapshot: Snapshot, scope: str, scope_id: str, **limits: int) -> None:
    rule = BudgetRule(scope=scope, scope_id=scope_id, **limits)  # type: ignore[arg-type]
    snapshot.on_snapshot_put(names.snapshot_budget_key(scope, scope_id), rule.model_dump_json().encode())


def _limits(budgeting: Budgeting, now: datetime = NOW) -> dict[str, tuple[int | None, int | None]]:
    return {c.key: (c.limit_nanos, c.limit_tokens) for c in budgeting.counters_of(GRANT, now)}


def test_a_budget_put_changed_or_removed_applies_to_the_next_request() -> None:
    snapshot = Snapshot()
    budgeting = Budgeting(snapshot, _Store(), ProxyMetrics())  # type: ignore[arg-type]
    assert _limits(budgeting) == {}
    _put(snapshot, "team", "t1", daily_nanos=1_000)
    assert _limits(budgeting) == {"aq:budget:{aqb}:team:t1:d20261205": (1_000, None)}
    first = budgeting.counters_of(GRANT, NOW)
    assert budgeting.counters_of(GRANT, NOW) is first  # kept: the same tuple, nothing rebuilt

    _put(snapshot, "team", "t1", daily_nanos=2_000, monthly_tokens=50)  # changed
    assert _limits(budgeting) == {
        "aq:budget:{aqb}:team:t1:d20261205": (2_000, None),
        "aq:budget:{aqb}:team:t1:m202612": (None, 50),
    }
    _put(snapshot, "user", "u1", daily_tokens=7)  # another scope of the same grant
    assert _limits(budgeting)["aq:budget:{aqb}:user:u1:d20261205"] == (None, 7)
    _put(snapshot, "org", "someone-else", daily_nanos=1)  # not this grant's: nothing changes for it
    assert "aq:budget:{aqb}:org:someone-else:d20261205" not in _limits(budgeting)

    snapshot.on_snapshot_delete(names.snapshot_budget_key("team", "t1"))  # removed
    assert _limits(budgeting) == {"aq:budget:{aqb}:user:u1:d20261205": (None, 7)}
    snapshot.on_snapshot_delete(names.snapshot_budget_key("user", "u1"))
    assert _limits(budgeting) == {}


def test_the_next_day_and_month_count_on_new_counters() -> None:
    snapshot = Snapshot()
    _put(snapshot, "org", "o1", daily_nanos=10, monthly_nanos=100)
    budgeting = Budgeting(snapshot, _Store(), ProxyMetrics())  # type: ignore[arg-type]
    assert set(_limits(budgeting)) == {"aq:budget:{aqb}:org:o1:d20261205", "aq:budget:{aqb}:org:o1:m202612"}
    later = NOW + timedelta(days=26, seconds=1)  # 1 January 2027, 00:00:00
    assert set(_limits(budgeting, later)) == {
        "aq:budget:{aqb}:org:o1:d20270101",
        "aq:budget:{aqb}:org:o1:m202701",
    }


def test_a_grant_moved_to_another_team_counts_on_that_teams_budget() -> None:
    snapshot = Snapshot()
    _put(snapshot, "team", "t1", daily_nanos=1)
    _put(snapshot, "team", "t2", daily_nanos=2)
    budgeting = Budgeting(snapshot, _Store(), ProxyMetrics())  # type: ignore[arg-type]
    assert _limits(budgeting) == {"aq:budget:{aqb}:team:t1:d20261205": (1, None)}
    moved = GRANT.model_copy(update={"team_id": "t2"})
    assert {c.key for c in budgeting.counters_of(moved, NOW)} == {"aq:budget:{aqb}:team:t2:d20261205"}


def test_a_refusal_never_shows_two_different_amounts_alike() -> None:
    """$0.999999999 left and a request that may cost $1.00 would both read "$1.00" rounded to cents."""
    rule = BudgetRule(scope="user", scope_id="u1", daily_nanos=2 * 10**9)
    day = budget_counters([rule], NOW)[0]
    refusal = BudgetRefusal(day, "nanos", spent=1_000_000_001, held=0)
    message, resets = refusal_message(refusal, worst_nanos=10**9, worst_tokens=10)
    assert "has $0.999999999 left (used $1.000000001)" in message, message
    assert "may cost up to $1.00. " in message and "budget of $2.00 " in message, message
    assert resets == "2026-12-06T00:00:00Z"
    # Amounts that read apart keep the usual rounding.
    message, _ = refusal_message(BudgetRefusal(day, "nanos", 1_500_000_000, 0), 10**9, 10)
    assert "has $0.50 left (used $1.50)" in message and "up to $1.00. " in message, message
