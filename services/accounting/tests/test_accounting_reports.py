"""Reports equal sums computed independently from the raw events, and every role sees only its share."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from accounting_testing import AccountingProcess, SessionKeys, publish_usage, usage_event, wait_until

from aqueduct_libs.events import UsageRecorded

pytestmark = [pytest.mark.nats, pytest.mark.chdb]

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
WINDOW = {"since": "2026-03-02T09:00:00Z", "until": "2026-03-02T12:00:00Z"}
COLUMNS = {"model": "model", "user": "user_id", "team": "team_id", "org": "org_id", "token": "token_id"}


def _events() -> list[UsageRecorded]:
    events = []
    for i in range(240):
        events.append(
            usage_event(
                i,
                event_id=f"rep-{i}",
                occurred_at=START + timedelta(minutes=i, seconds=7),  # 09:00 .. 12:59, the last hour outside
                org_id=("org-a", "org-b")[i % 2],
                team_id=("team-a1", "team-a2", "team-b1")[i % 3],
                user_id=f"user-{i % 4}",
            )
        )
    return events


EVENTS = _events()
INSIDE = [e for e in EVENTS if e.occurred_at < START + timedelta(hours=3)]


def _expected(events: list[UsageRecorded], key: str) -> dict[str, tuple[int, int, int]]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for e in events:
        row = sums[getattr(e, COLUMNS[key])]
        row[0] += 1
        row[1] += e.input_tokens
        row[2] += e.output_tokens
    return {k: (v[0], v[1], v[2]) for k, v in sums.items()}


def _get(service: AccountingProcess, token: str, path: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{service.url}{path}",
        params={**WINDOW, **params},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30.0,
    )


@pytest.fixture(scope="module")
async def loaded(js, accounting: AccountingProcess, admin_token: str) -> AccountingProcess:
    await publish_usage(js, EVENTS)

    def all_in() -> bool:
        answer = accounting.sql(admin_token, "SELECT count() FROM usage_events WHERE event_id LIKE 'rep-%'")
        return answer.json()["rows"] == [[len(EVENTS)]]

    assert await wait_until(all_in, within=30)
    return accounting


@pytest.mark.parametrize("group_by", list(COLUMNS))
async def test_summary_equals_independent_sums(loaded: AccountingProcess, admin_token: str, group_by: str):
    answer = _get(loaded, admin_token, "/api/usage/summary", group_by=group_by)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    got = {g["key"]: (g["requests"], g["input_tokens"], g["output_tokens"]) for g in body["groups"]}
    assert got == _expected(INSIDE, group_by)
    assert body["totals"]["requests"] == len(INSIDE)
    assert body["totals"]["input_tokens"] == sum(e.input_tokens for e in INSIDE)


async def test_cost_uses_the_shipped_price_map(loaded: AccountingProcess, admin_token: str) -> None:
    body = _get(loaded, admin_token, "/api/usage/summary", group_by="model").json()
    by_model = {g["key"]: g for g in body["groups"]}

    # gpt-4o-mini in LiteLLM's map: $0.15 / M input tokens, $0.60 / M output tokens.
    mini = [e for e in INSIDE if e.model == "gpt-4o-mini"]
    expected = sum(e.input_tokens * 150 + e.output_tokens * 600 for e in mini)
    assert by_model["gpt-4o-mini"]["cost_nanos"] == expected
    assert by_model["local-llama"]["cost_nanos"] == 0  # nobody priced it
    assert body["totals"]["cost_usd"] == pytest.approx(expected / 1e9)


async def test_timeseries_and_top(loaded: AccountingProcess, admin_token: str) -> None:
    series = _get(loaded, admin_token, "/api/usage/timeseries", bucket="hour").json()["points"]
    top = _get(loaded, admin_token, "/api/usage/top", group_by="user", order_by="tokens", limit="2").json()

    assert [p["bucket"] for p in series] == [
        "2026-03-02T09:00:00Z",
        "2026-03-02T10:00:00Z",
        "2026-03-02T11:00:00Z",
    ]
    assert [p["requests"] for p in series] == [60, 60, 60]
    per_user = _expected(INSIDE, "user")
    ranked = sorted(per_user, key=lambda u: -(per_user[u][1] + per_user[u][2]))[:2]
    assert [row["key"] for row in top["top"]] == ranked


async def test_roll_ups_match_the_raw_events(loaded: AccountingProcess, admin_token: str) -> None:
    for table in ("usage_by_minute", "usage_by_hour", "usage_by_day"):
        answer = loaded.sql(
            admin_token,
            f"SELECT sum(requests), sum(input_tokens), sum(output_tokens) FROM {table} "
            "WHERE org_id IN ('org-a', 'org-b') AND toDate(bucket) = '2026-03-02'",
        )
        assert answer.json()["rows"] == [
            [len(EVENTS), sum(e.input_tokens for e in EVENTS), sum(e.output_tokens for e in EVENTS)]
        ], table


async def test_csv_export(loaded: AccountingProcess, admin_token: str) -> None:
    answer = _get(loaded, admin_token, "/api/usage/export.csv", group_by="team")

    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {r["team"]: int(r["requests"]) for r in rows} == {
        k: v[0] for k, v in _expected(INSIDE, "team").items()
    }


async def test_a_user_sees_only_their_own_usage(loaded: AccountingProcess, session_keys: SessionKeys) -> None:
    token = await session_keys.signed_in("user-1", org="org-b", teams=["team-a2"])

    body = _get(loaded, token, "/api/usage/summary", group_by="user").json()
    other = _get(loaded, token, "/api/usage/summary", user_id="user-2")

    assert [g["key"] for g in body["groups"]] == ["user-1"]
    assert body["totals"]["requests"] == _expected(INSIDE, "user")["user-1"][0]
    assert other.status_code == 403


async def test_a_team_admin_reads_their_team_but_not_another(
    loaded: AccountingProcess, session_keys: SessionKeys
) -> None:
    token = await session_keys.signed_in("user-0", org="org-a", teams=["team-a1"], team_admin=["team-a1"])

    own = _get(loaded, token, "/api/usage/summary", team_id="team-a1", group_by="team")
    other = _get(loaded, token, "/api/usage/summary", team_id="team-b1")
    everything = _get(loaded, token, "/api/usage/summary", group_by="team").json()
    other_org = _get(loaded, token, "/api/usage/summary", org_id="org-b")

    assert own.status_code == 200
    assert own.json()["totals"]["requests"] == _expected(INSIDE, "team")["team-a1"][0]
    assert other.status_code == 403
    assert other_org.status_code == 403
    # Unfiltered: their team, plus their own usage elsewhere, never another team's usage.
    seen = {g["key"] for g in everything["groups"]}
    own_elsewhere = {e.team_id for e in INSIDE if e.user_id == "user-0"}
    assert seen <= {"team-a1"} | own_elsewhere
    assert everything["totals"]["requests"] == len(
        [e for e in INSIDE if e.team_id == "team-a1" or e.user_id == "user-0"]
    )


async def test_an_org_admin_reads_their_org_only(
    loaded: AccountingProcess, session_keys: SessionKeys
) -> None:
    token = await session_keys.signed_in("user-3", org="org-a", org_admin=True)

    body = _get(loaded, token, "/api/usage/summary", group_by="org").json()

    assert [g["key"] for g in body["groups"]] == ["org-a"] or {g["key"] for g in body["groups"]} == {
        "org-a",
        *{e.org_id for e in INSIDE if e.user_id == "user-3"},
    }
    assert _get(loaded, token, "/api/usage/summary", org_id="org-b").status_code == 403


def test_reports_need_a_valid_session(loaded: AccountingProcess) -> None:
    assert httpx.get(f"{loaded.url}/api/usage/summary").status_code == 401
    assert _get(loaded, SessionKeys().token("x", admin=True), "/api/usage/summary").status_code == 401
    bad = _get(loaded, SessionKeys().token("x"), "/api/usage/summary", group_by="colour")
    assert bad.status_code == 401


def test_bad_parameters_are_400(loaded: AccountingProcess, admin_token: str) -> None:
    assert _get(loaded, admin_token, "/api/usage/summary", group_by="colour").status_code == 400
    assert _get(loaded, admin_token, "/api/usage/timeseries", bucket="week").status_code == 400
    backwards = {"since": "2026-03-02T12:00:00Z", "until": "2026-03-02T09:00:00Z"}
    answer = httpx.get(
        f"{loaded.url}/api/usage/summary",
        params=backwards,
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert answer.status_code == 400
    # A time without a zone is UTC, not a crash; a malformed one is a 400 problem, not FastAPI's 422.
    naive = _get(loaded, admin_token, "/api/usage/summary", since="2026-03-01", until="2026-03-04T00:00:00")
    assert naive.status_code == 200
    malformed = _get(loaded, admin_token, "/api/usage/top", limit="many")
    assert malformed.status_code == 400 and malformed.json()["code"] == "bad_request"


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-03-02T09:17:30Z", "2026-03-02T11:42:15Z"),  # raw, minute and hour pieces
        ("2026-03-02T10:05:00Z", "2026-03-02T10:05:40Z"),  # under a minute: raw only
        ("2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z"),  # whole days
    ],
)
def test_unaligned_windows_are_exact(
    loaded: AccountingProcess, admin_token: str, since: str, until: str
) -> None:
    lo, hi = datetime.fromisoformat(since), datetime.fromisoformat(until)
    inside = [e for e in EVENTS if lo <= e.occurred_at < hi]

    body = httpx.get(
        f"{loaded.url}/api/usage/summary",
        params={"since": since, "until": until, "group_by": "token"},
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=30.0,
    ).json()

    got = {g["key"]: (g["requests"], g["input_tokens"], g["output_tokens"]) for g in body["groups"]}
    assert got == _expected(inside, "token")
    assert body["totals"]["requests"] == len(inside)
