"""Which budget counters a request counts against, as the hot path finds them: looked up once per user,
team and org and kept, yet a budget added, changed or removed in the snapshot applies to the very next
request, and a new day or month to the first request in it (no Valkey needed: nothing is reserved)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aqueduct_libs import names
from aqueduct_libs.snapshot import BudgetRule, Limits, QuotaDecision, TokenGrant
from aqueduct_proxy.adapters.budget_store import BudgetRefusal
from aqueduct_proxy.application.budgeting import Budgeting
from aqueduct_proxy.domain.access import check_quota
from aqueduct_proxy.domain.budgets import budget_counters, refusal_message
from aqueduct_proxy.domain.errors import BudgetExhaustedError
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.metrics import ProxyMetrics

NOW = datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC)
GRANT = TokenGrant(
    token_id="tok", token_hash="hash", name="t", user_id="u1", team_id="t1", org_id="o1", limits=Limits()
)


class _Store:
    """What ``Budgeting`` reads of a store when it only looks counters up."""

    counted: dict[str, list[int]] = {}
    spent: dict[str, list[int]] = {}
    own_held: dict[str, list[int]] = {}


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


def test_a_refusal_names_whose_budget_it_is() -> None:
    """By the org's, team's or user's name and id; by the id alone where the directory sent no name (an
    older directory); a very long name is cut as the request's own names are."""
    named = BudgetRule(scope="team", scope_id="t1", name="r&d lenses", daily_nanos=10**9)
    message, _ = refusal_message(BudgetRefusal(budget_counters([named], NOW)[0], "nanos", 10**9, 0), 10, 1)
    assert "the team daily budget of $1.00 (team 'r&d lenses', id t1) has $0.00 left" in message, message
    unnamed = BudgetRule(scope="org", scope_id="o1", daily_tokens=5)
    message, _ = refusal_message(BudgetRefusal(budget_counters([unnamed], NOW)[0], "tokens", 5, 0), 0, 3)
    assert "(org o1) has 0 tokens left" in message, message
    long = BudgetRule(scope="user", scope_id="u1", name="x" * 5000, daily_tokens=5)
    message, _ = refusal_message(BudgetRefusal(budget_counters([long], NOW)[0], "tokens", 5, 0), 0, 3)
    assert "... (5,000 characters)', id u1)" in message and len(message) < 1000, message


def test_a_used_up_budget_names_its_holder() -> None:
    """Accounting's decision names the scope by id; the proxy adds the name the budget's entry carries."""
    snapshot = Snapshot()
    rule = BudgetRule(scope="team", scope_id="t1", name="research", daily_nanos=10)
    snapshot.on_snapshot_put(names.snapshot_budget_key("team", "t1"), rule.model_dump_json().encode())
    decision = QuotaDecision(
        scope="team",
        scope_id="t1",
        budget="team daily budget of $0.00",
        period="day",
        until=datetime.now(UTC) + timedelta(hours=1),
        decided_at=NOW,
    )
    snapshot.quotas["team.t1"] = decision
    with pytest.raises(BudgetExhaustedError) as refused:
        check_quota(GRANT, snapshot)
    assert "(team 'research', id t1) is used up" in refused.value.message, refused.value.message
    snapshot.budgets.clear()  # no entry (any more): the id alone
    with pytest.raises(BudgetExhaustedError) as refused:
        check_quota(GRANT, snapshot)
    assert "(team t1) is used up" in refused.value.message, refused.value.message
