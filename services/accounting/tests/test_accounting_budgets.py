"""Budgets from the directory's snapshot (``budget.*`` keys): crossing one puts a quota decision in the KV
bucket within 2 s; raising it lifts the decision. The directory events are mirrored into ClickHouse once
each (for the audit), but budgets no longer depend on that copy."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from itertools import count

import pytest
from accounting_testing import AccountingProcess, publish_usage, usage_event, wait_until
from nats.js.errors import KeyNotFoundError

from aqueduct_libs import names
from aqueduct_libs.events import DirectoryEvent
from aqueduct_libs.snapshot import BudgetRule, ModelRoute, QuotaDecision

pytestmark = [pytest.mark.nats, pytest.mark.chdb]

_notification = count(1)
_usage = count(1)


async def _directory_event(
    js, aggregate_type: str, aggregate_id: str, budgets: dict, msg_id: str = ""
) -> int:
    n = next(_notification)
    event = DirectoryEvent(
        notification_id=n,
        type=f"{aggregate_type}BudgetsSet",
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=n,
        actor="admin-1",
        occurred_at=datetime.now(UTC),
        data={"budgets": budgets, "actor": "admin-1"},
    )
    await js.publish(
        names.directory_event_subject(event.type),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or str(n)},
    )
    return n


async def _budget(js, scope: str, scope_id: str, **limits: int) -> None:
    """What the directory's projection writes for an org, team or user with budgets."""
    kv = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
    rule = BudgetRule(scope=scope, scope_id=scope_id, **limits)  # type: ignore[arg-type]
    await kv.put(names.snapshot_budget_key(scope, scope_id), rule.model_dump_json().encode())


async def _spend(js, **fields) -> None:
    i = next(_usage)
    await publish_usage(js, [usage_event(i, event_id=f"budget-{i}", occurred_at=datetime.now(UTC), **fields)])


async def _decision(js, key: str) -> QuotaDecision | None:
    kv = await js.key_value(names.QUOTA_BUCKET)
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return QuotaDecision.model_validate_json(entry.value) if entry.value else None


async def _until(js, key: str, present: bool, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if (await _decision(js, key) is not None) == present:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} {'never appeared' if present else 'never lifted'} within {within}s")


@pytest.fixture(scope="module")
async def priced(js) -> str:
    """A model whose price the directory sets: $0.001 per input token, $0.002 per output token."""
    kv = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
    route = ModelRoute(
        name="priced-model",
        endpoint="local",
        upstream_model="whatever",
        input_price_nanos_per_token=1_000_000,
        output_price_nanos_per_token=2_000_000,
    )
    await kv.put(names.snapshot_model_key(route.name), route.model_dump_json().encode())
    await asyncio.sleep(0.5)  # the service watches the bucket
    return route.name


async def test_team_daily_budget_crossed_then_raised(js, accounting: AccountingProcess, priced: str) -> None:
    await _budget(js, "team", "team-bud", daily_nanos=500_000_000)  # $0.50
    # $0.30 + $0.10: under the budget.
    await _spend(js, team_id="team-bud", model=priced, input_tokens=300, output_tokens=0)
    await _spend(js, team_id="team-bud", model=priced, input_tokens=0, output_tokens=50)
    await asyncio.sleep(1.5)
    assert await _decision(js, "team.team-bud") is None

    await _spend(js, team_id="team-bud", model=priced, input_tokens=100, output_tokens=0)  # $0.50 reached
    took = await _until(js, "team.team-bud", present=True, within=2.0)

    decision = await _decision(js, "team.team-bud")
    assert decision is not None and took <= 2.0
    assert (decision.scope, decision.scope_id, decision.period) == ("team", "team-bud", "day")
    assert decision.budget == "team daily budget of $0.50"
    today = datetime.now(UTC).date()
    assert decision.until.date() > today and decision.until.hour == 0

    await _budget(js, "team", "team-bud", daily_nanos=20 * 10**9, monthly_nanos=100 * 10**9)
    assert await _until(js, "team.team-bud", present=False, within=2.0) <= 2.0


async def test_a_budget_crossed_in_a_steady_stream_is_decided_within_2_s(
    js, accounting: AccountingProcess, priced: str
) -> None:
    """A steady stream is stored once per ``STORE_INTERVAL_SECONDS``, not as each event comes: an event
    that crosses a budget waits for the next store, then one check. At three phases of the stores."""
    stop = asyncio.Event()

    async def trickle() -> None:  # other usage, 20 messages a second: stores come by the interval
        while not stop.is_set():
            await _spend(js, team_id="team-trickle", model="local-llama", input_tokens=1, output_tokens=0)
            await asyncio.sleep(0.05)

    running = asyncio.create_task(trickle())
    try:
        await asyncio.sleep(3.0)
        for phase in range(3):
            team = f"team-steady-{phase}"
            await _budget(js, "team", team, daily_nanos=100_000_000)  # $0.10
            await asyncio.sleep(1.0 + 0.5 * phase)
            await _spend(js, team_id=team, model=priced, input_tokens=100, output_tokens=0)  # $0.10 reached
            assert await _until(js, f"team.{team}", present=True, within=2.0) <= 2.0
    finally:
        stop.set()
        await running


async def test_a_budget_crossed_in_a_busy_stream_is_decided_before_its_store_and_counted_once(
    js, accounting: AccountingProcess, priced: str
) -> None:
    """A busy stream is stored every ``BUSY_STORE_INTERVAL_SECONDS`` (3 s), but what is read is counted in
    the decisions at once: a crossing is decided within 2 s, before its store. Once stored, an event no
    longer counts as read-and-held, so it never counts twice ($0.06 of $0.10, then stored: no decision)."""
    stop = asyncio.Event()

    async def busy() -> None:  # 20 messages of 25 events a second, about 200 kB: stored every 3 s
        n = 0
        while not stop.is_set():
            events = [
                usage_event(
                    k,
                    event_id=f"busy-{n}-{k}",
                    occurred_at=datetime.now(UTC),
                    team_id="team-busy",
                    model="local-llama",
                    input_tokens=1,
                    output_tokens=0,
                )
                for k in range(25)
            ]
            await js.publish(
                names.USAGE_SUBJECT,
                b"[" + b",".join(event.model_dump_json().encode() for event in events) + b"]",
                headers={"Nats-Msg-Id": f"busy-{n}"},
            )
            n += 1
            await asyncio.sleep(0.05)

    running = asyncio.create_task(busy())
    try:
        await asyncio.sleep(4.0)  # busy: the stores are 3 s apart now
        team = "team-held"
        await _budget(js, "team", team, daily_nanos=100_000_000)  # $0.10
        await asyncio.sleep(1.0)
        await _spend(js, team_id=team, model=priced, input_tokens=60, output_tokens=0)  # $0.06
        for _ in range(10):  # read, held, stored: never counted twice
            await asyncio.sleep(0.5)
            assert await _decision(js, f"team.{team}") is None
        await _spend(js, team_id=team, model=priced, input_tokens=40, output_tokens=0)  # $0.10 reached
        assert await _until(js, f"team.{team}", present=True, within=2.0) <= 2.0
    finally:
        stop.set()
        await running


async def test_user_monthly_token_budget_and_org_budget(
    js, accounting: AccountingProcess, priced: str
) -> None:
    await _budget(js, "user", "user-tok", monthly_tokens=1000)
    await _budget(js, "org", "org-bud", monthly_nanos=10**9)

    await _spend(
        js, user_id="user-tok", org_id="org-other", model="local-llama", input_tokens=600, output_tokens=400
    )
    await _spend(js, user_id="someone", org_id="org-bud", model=priced, input_tokens=1000, output_tokens=0)

    await _until(js, "user.user-tok", present=True, within=2.0)
    await _until(js, "org.org-bud", present=True, within=2.0)
    user = await _decision(js, "user.user-tok")
    org = await _decision(js, "org.org-bud")
    assert (
        user is not None and user.period == "month" and user.budget == "user monthly budget of 1,000 tokens"
    )
    assert org is not None and org.budget == "org monthly budget of $1.00" and org.until.day == 1


async def test_a_removed_budget_lifts_its_decision(js, accounting: AccountingProcess, priced: str) -> None:
    await _budget(js, "team", "team-gone", daily_nanos=100_000_000)  # $0.10
    await _spend(js, team_id="team-gone", model=priced, input_tokens=100, output_tokens=0)
    await _until(js, "team.team-gone", present=True, within=2.0)
    kv = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
    await kv.delete(names.snapshot_budget_key("team", "team-gone"))  # the team's budget was removed
    await _until(js, "team.team-gone", present=False, within=2.0)


async def test_directory_events_are_mirrored_once(
    js, accounting: AccountingProcess, admin_token: str
) -> None:
    n = await _directory_event(js, "Team", "team-audit", {"daily_usd": "7"})
    # The same notification again under another message id (a relay retry after the dedup window).
    event = DirectoryEvent(
        notification_id=n,
        type="TeamBudgetsSet",
        aggregate_type="Team",
        aggregate_id="team-audit",
        aggregate_version=n,
        actor="admin-1",
        occurred_at=datetime.now(UTC),
        data={"budgets": {"daily_usd": "7"}},
    )
    await js.publish(
        names.directory_event_subject(event.type),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": "again"},
    )
    query = (
        f"SELECT count(), any(type), any(actor), any(data) FROM directory_events WHERE notification_id = {n}"
    )

    def mirrored() -> bool:
        return accounting.sql(admin_token, query).json()["rows"][0][0] >= 1

    assert await wait_until(mirrored, within=5)
    await asyncio.sleep(1.0)
    rows = accounting.sql(admin_token, query).json()["rows"]
    assert rows[0][:3] == [1, "TeamBudgetsSet", "admin-1"]
    assert json.loads(rows[0][3])["budgets"] == {"daily_usd": "7"}
