"""The usage CSV export names what its ids are: user name and e-mail, team name, token name, org name,
the latest the directory said (from the mirror of its events), next to the ids."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from itertools import count

import httpx
import pytest
from accounting_testing import AccountingProcess, SessionKeys, publish_usage, usage_event, wait_until

from aqueduct_libs import names
from aqueduct_libs.events import DirectoryEvent

pytestmark = [pytest.mark.nats, pytest.mark.chdb]

_n = count(1)
START = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
WINDOW = {"since": "2026-05-04T00:00:00Z", "until": "2026-05-05T00:00:00Z"}


async def _event(js, type_: str, aggregate_type: str, aggregate_id: str, **data: object) -> None:
    n = next(_n)
    event = DirectoryEvent(
        notification_id=n,
        type=type_,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=n,
        actor="admin-1",
        occurred_at=datetime.now(UTC),
        data=data,
    )
    await js.publish(
        names.directory_event_subject(type_),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": str(n)},
    )


def _summary(service: AccountingProcess, token: str, **params: str) -> dict:
    return httpx.get(
        f"{service.url}/api/usage/summary",
        params={**WINDOW, **params},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()


def _csv(service: AccountingProcess, token: str, **params: str) -> list[dict[str, str]]:
    answer = httpx.get(
        f"{service.url}/api/usage/export.csv",
        params={**WINDOW, **params},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


async def test_export_carries_names_next_to_ids(
    js, accounting: AccountingProcess, session_keys: SessionKeys, admin_token: str
) -> None:
    await _event(
        js, "UserRegistered", "User", "u-ada", name="Ada Lovelace", email="ada@example.org", org_id="o-1"
    )
    await _event(js, "UserRegistered", "User", "u-bob", name="Bob", email="bob@example.org", org_id="o-1")
    await _event(js, "UserProfileUpdated", "User", "u-bob", name="Bob Builder", email="bob@uni.example")
    await _event(js, "UserBudgetsSet", "User", "u-bob", budgets={})  # no name: does not blank it
    await _event(js, "TeamCreated", "Team", "t-phys", name="Physics", org_id="o-1", description="", limits={})
    await _event(
        js,
        "TokenIssued",
        "Token",
        "k-1",
        name="laptop",
        token_hash="h" * 64,
        preview="aq-abc...wxyz",
        user_id="u-ada",
        org_id="o-1",
    )
    await _event(js, "OrgCreated", "Org", "o-1", name="University")
    events = [
        usage_event(
            i,
            event_id=f"names-{i}",
            occurred_at=START + timedelta(minutes=i),
            user_id=("u-ada", "u-bob", "u-nameless")[i % 3],
            team_id="t-phys",
            org_id="o-1",
            token_id=("k-1", "k-2")[i % 2],
        )
        for i in range(12)
    ]
    await publish_usage(js, events)

    def stored() -> bool:
        rows = {r["user"]: r for r in _csv(accounting, admin_token, group_by="user")}
        return (
            sum(int(r["requests"]) for r in rows.values()) == len(events)
            and rows.get("u-bob", {}).get("user_name") == "Bob Builder"
        )

    assert await wait_until(stored, within=30)
    users = {r["user"]: r for r in _csv(accounting, admin_token, group_by="user")}
    assert list(users["u-ada"])[:3] == ["user", "user_name", "user_email"]
    assert (users["u-ada"]["user_name"], users["u-ada"]["user_email"]) == ("Ada Lovelace", "ada@example.org")
    # The latest name and e-mail win; an event without a name leaves it as it was.
    assert (users["u-bob"]["user_name"], users["u-bob"]["user_email"]) == ("Bob Builder", "bob@uni.example")
    # An id the directory never named keeps its id and empty name columns.
    assert (users["u-nameless"]["user_name"], users["u-nameless"]["user_email"]) == ("", "")
    assert int(users["u-ada"]["requests"]) == 4

    teams = _csv(accounting, admin_token, group_by="team")
    assert [(r["team"], r["team_name"], r["requests"]) for r in teams] == [("t-phys", "Physics", "12")]
    tokens = {r["token"]: r["token_name"] for r in _csv(accounting, admin_token, group_by="token")}
    assert tokens == {"k-1": "laptop", "k-2": ""}
    orgs = _csv(accounting, admin_token, group_by="org", bucket="hour")
    assert {(r["org"], r["org_name"]) for r in orgs} == {("o-1", "University")}
    assert list(orgs[0])[:3] == ["bucket", "org", "org_name"]
    # Grouped by model: no name columns.
    assert "model_name" not in _csv(accounting, admin_token, group_by="model")[0]

    # The summary names its groups too (the usage page labels them without asking for every user).
    summary = _summary(accounting, admin_token, group_by="user")
    named = {g["key"]: (g.get("name"), g.get("email")) for g in summary["groups"]}
    assert named == {
        "u-ada": ("Ada Lovelace", "ada@example.org"),
        "u-bob": ("Bob Builder", "bob@uni.example"),
        "u-nameless": (None, None),
    }

    # A user's export names only what they may see: their own row.
    ada = await session_keys.signed_in("u-ada", org="o-1")
    assert [(r["user"], r["user_name"]) for r in _csv(accounting, ada, group_by="user")] == [
        ("u-ada", "Ada Lovelace")
    ]
