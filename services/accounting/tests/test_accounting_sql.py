"""Read-only SQL for Admins: answers SELECTs as columns and rows, refuses everything that writes."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from accounting_testing import AccountingProcess, SessionKeys, publish_usage, usage_event

pytestmark = [pytest.mark.nats, pytest.mark.chdb]


async def _wait_for_rows(accounting: AccountingProcess, token: str, expected: int) -> None:
    for _ in range(100):
        answer = accounting.sql(token, "SELECT count() FROM usage_events")
        if answer.status_code == 200 and answer.json()["rows"][0][0] >= expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"usage rows never reached {expected}")


async def test_admin_reads_usage_rows(js, accounting: AccountingProcess, admin_token: str) -> None:
    await publish_usage(js, [usage_event(i, event_id=f"sql-{i}") for i in range(3)])
    await _wait_for_rows(accounting, admin_token, 3)

    answer = accounting.sql(
        admin_token,
        "SELECT model, token_id, input_tokens, output_tokens FROM usage_events ORDER BY event_id;",
    )

    assert answer.status_code == 200
    body = answer.json()
    assert body["columns"] == ["model", "token_id", "input_tokens", "output_tokens"]
    expected = [usage_event(i) for i in range(3)]
    assert body["rows"] == [[e.model, e.token_id, e.input_tokens, e.output_tokens] for e in expected]


@pytest.mark.parametrize(
    "query",
    [
        "INSERT INTO usage_events (event_id) VALUES ('forged')",
        "DROP TABLE usage_events",
        "ALTER TABLE usage_events DELETE WHERE 1",
        "TRUNCATE TABLE usage_events",
        "SELECT 1; DROP TABLE usage_events",
        "SELECT 1 INTO OUTFILE '/tmp/aqueduct-leak.csv'",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT 1 SETTINGS readonly=0",
        "WITH x AS (SELECT 1) INSERT INTO usage_events (event_id) SELECT 'forged'",
        "CREATE TABLE evil (a UInt8) ENGINE = Memory",
    ],
)
async def test_writes_are_refused(accounting: AccountingProcess, admin_token: str, query: str) -> None:
    answer = accounting.sql(admin_token, query)

    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"]
    tables = accounting.sql(admin_token, "SHOW TABLES").json()["rows"]
    assert ["usage_events"] in tables and ["evil"] not in tables
    forged = accounting.sql(admin_token, "SELECT count() FROM usage_events WHERE event_id = 'forged'")
    assert forged.json()["rows"] == [[0]]


async def test_sql_is_for_admins_only(accounting: AccountingProcess, session_keys: SessionKeys) -> None:
    org_admin = await session_keys.signed_in("u-2", org="org-0", org_admin=True)

    assert accounting.sql(org_admin, "SELECT 1").status_code == 403
    assert accounting.sql("not-a-jwt", "SELECT 1").status_code == 401
    assert accounting.sql(SessionKeys().token("admin-1", admin=True), "SELECT 1").status_code == 401


async def test_a_bad_query_is_a_400_with_the_engine_message(accounting: AccountingProcess, admin_token: str):
    answer = accounting.sql(admin_token, "SELECT no_such_column FROM usage_events")

    assert answer.status_code == 400
    assert "no_such_column" in answer.json()["detail"]


async def test_answers_are_capped_even_for_endless_queries(
    accounting: AccountingProcess, admin_token: str
) -> None:
    answer = accounting.sql(admin_token, "SELECT number FROM system.numbers")

    assert answer.status_code == 200
    assert len(answer.json()["rows"]) == 10_000


async def test_a_session_acts_with_the_roles_the_directory_gives_now(
    js, accounting: AccountingProcess, session_keys: SessionKeys
) -> None:
    """An Admin demoted (an Org-Admin promoted, a user deactivated) by the directory: the same session
    token, not renewed, loses (gains) SQL, other orgs' usage and dead letters within 2 s."""
    admin = await session_keys.signed_in("u-demoted", org="org-0", admin=True)
    org_admin = await session_keys.signed_in("u-promoted", org="org-0", org_admin=True)

    def answers(token: str) -> tuple[int, int, int]:
        with httpx.Client(base_url=accounting.url, headers={"Authorization": f"Bearer {token}"}) as client:
            return (
                accounting.sql(token, "SELECT 1").status_code,
                client.get("/api/usage/summary", params={"org_id": "org-1"}).status_code,
                client.get("/api/dead-letters").status_code,
            )

    async def until(token: str, wanted: tuple[int, int, int]) -> float:
        started = time.monotonic()
        while (seen := await asyncio.to_thread(answers, token)) != wanted:
            assert time.monotonic() - started < 2.0, seen
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    assert answers(admin) == (200, 200, 200)
    assert answers(org_admin) == (403, 403, 403)

    await session_keys.set_user(js, "u-demoted", org="org-0", org_admin=True)
    await session_keys.set_user(js, "u-promoted", org="org-0", admin=True)
    demoted, promoted = await until(admin, (403, 403, 403)), await until(org_admin, (200, 200, 200))
    print(f"\ndemotion reached accounting in {demoted:.3f}s, promotion in {promoted:.3f}s")

    await session_keys.set_user(js, "u-promoted", active=False)
    await until(org_admin, (401, 401, 401))
