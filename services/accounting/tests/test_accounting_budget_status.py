"""``GET /api/budgets/status``: spent, remaining and "resets at" of the budgets that apply to a viewer,
from accounting's running totals, with readable amounts; scoped like the reports API."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from accounting_testing import AccountingProcess, SessionKeys, publish_usage, usage_event, wait_until

from aqueduct_libs import names
from aqueduct_libs.snapshot import BudgetRule, ModelRoute

pytestmark = [pytest.mark.nats, pytest.mark.chdb]


async def _put(js, key: str, value: str) -> None:
    kv = await js.key_value(names.AUTH_SNAPSHOT_BUCKET)
    await kv.put(key, value.encode())


async def _budget(js, scope: str, scope_id: str, **limits: int) -> None:
    rule = BudgetRule(scope=scope, scope_id=scope_id, **limits)  # type: ignore[arg-type]
    await _put(js, names.snapshot_budget_key(scope, scope_id), rule.model_dump_json())


def _get(accounting: AccountingProcess, token: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{accounting.url}/api/budgets/status",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


async def test_budget_status_for_the_viewer_and_by_scope(
    js, accounting: AccountingProcess, session_keys: SessionKeys
) -> None:
    route = ModelRoute(
        name="status-model",
        endpoint="local",
        upstream_model="whatever",
        input_price_nanos_per_token=1_000,  # $0.000001 per input token
        output_price_nanos_per_token=1_000,
    )
    await _put(js, names.snapshot_model_key(route.name), route.model_dump_json())
    await _budget(js, "user", "st-user", daily_nanos=10_000_000)  # $0.01 a day
    await _budget(js, "team", "st-team", monthly_tokens=5_000)
    await _budget(js, "org", "st-org", monthly_nanos=5 * 10**9)
    await _budget(js, "team", "other-team", daily_nanos=10**9)
    await asyncio.sleep(0.5)
    # 2,000 tokens at $0.000001: $0.002 spent by the user, in the team and the org.
    await publish_usage(
        js,
        [
            usage_event(
                1,
                event_id="status-1",
                occurred_at=datetime.now(UTC),
                user_id="st-user",
                team_id="st-team",
                org_id="st-org",
                model=route.name,
                input_tokens=1_500,
                output_tokens=500,
            )
        ],
    )
    user = await session_keys.signed_in("st-user", org="st-org", teams=["st-team"])

    def spent() -> bool:
        answer = _get(accounting, user).json()["budgets"]
        return any(b["scope"] == "user" and b["spent"] > 0 for b in answer)

    assert await wait_until(spent, within=20)
    answer = _get(accounting, user)
    assert answer.status_code == 200, answer.text
    lines = {(b["scope"], b["scope_id"], b["period"], b["unit"]): b for b in answer.json()["budgets"]}
    assert set(lines) == {
        ("user", "st-user", "day", "usd"),
        ("team", "st-team", "month", "tokens"),
        ("org", "st-org", "month", "usd"),
    }  # not the other team's
    mine = lines["user", "st-user", "day", "usd"]
    assert (mine["spent"], mine["limit"], mine["remaining"]) == (2_000_000, 10_000_000, 8_000_000)
    assert (mine["spent_text"], mine["remaining_text"], mine["limit_text"]) == ("$0.002", "$0.008", "$0.01")
    assert mine["used_up"] is False
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    resets = datetime.fromisoformat(mine["resets_at"])
    assert resets.date() == tomorrow and (resets.hour, resets.minute) == (0, 0)
    team = lines["team", "st-team", "month", "tokens"]
    assert (team["spent"], team["remaining_text"]) == (2_000, "3,000 tokens")
    assert datetime.fromisoformat(team["resets_at"]).day == 1

    # One scope, asked for explicitly: allowed for a member, refused for a team they are not in.
    one = _get(accounting, user, scope="team", id="st-team").json()["budgets"]
    assert [b["scope_id"] for b in one] == ["st-team"]
    refused = _get(accounting, user, scope="team", id="other-team")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert _get(accounting, user, scope="org", id="another-org").status_code == 403
    assert _get(accounting, user, scope="user", id="someone-else").status_code == 403
    admin = await session_keys.signed_in("admin-1", admin=True)
    assert [
        b["scope_id"] for b in _get(accounting, admin, scope="team", id="other-team").json()["budgets"]
    ] == ["other-team"]
    # Bad input: a clear 400 and no answer without a credential.
    assert _get(accounting, user, scope="planet", id="x").status_code == 400
    assert _get(accounting, user, scope="team").status_code == 400
    assert _get(accounting, "not-a-session").status_code == 401

    # Used up: spent reaches the limit and nothing remains.
    await publish_usage(
        js,
        [
            usage_event(
                2,
                event_id="status-2",
                occurred_at=datetime.now(UTC),
                user_id="st-user",
                team_id="st-team",
                org_id="st-org",
                model=route.name,
                input_tokens=9_000,
                output_tokens=0,
            )
        ],
    )

    def used_up() -> bool:
        return any(b["used_up"] for b in _get(accounting, user, scope="user", id="st-user").json()["budgets"])

    assert await wait_until(used_up, within=20)
    mine = _get(accounting, user, scope="user", id="st-user").json()["budgets"][0]
    assert (mine["remaining"], mine["remaining_text"], mine["spent_text"]) == (0, "$0.00", "$0.011")
