"""Report filters through the HTTP API with hostile values (quotes, backslashes, NUL, placeholders, SQL,
huge strings): bound as parameters, they match nothing and change nothing; never a 500."""

from __future__ import annotations

import httpx
from accounting_testing import AccountingProcess

HOSTILE = [
    "a'b",
    "a\\'b",
    "\\",
    "x\x00y",
    "'; DROP TABLE usage_events; --",
    "' OR 1=1 --",
    "{org_id:String}",
    "\u202e\U0001f600",
    "é" * 5000,
]


def _get(accounting: AccountingProcess, token: str, path: str, params: dict) -> httpx.Response:
    return httpx.get(
        f"{accounting.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_hostile_filter_values_are_bound_and_match_nothing(
    accounting: AccountingProcess, admin_token: str
) -> None:
    before = accounting.sql(admin_token, "SELECT count() FROM usage_events").json()["rows"]
    for value in HOSTILE:
        for name in ("org_id", "team_id", "user_id", "token_id", "model"):
            for path in ("/api/usage/summary", "/api/usage/top", "/api/usage/export.csv"):
                params = {name: value, "group_by": "model"}
                answer = _get(accounting, admin_token, path, params)
                assert answer.status_code == 200, (
                    path,
                    name,
                    value[:20],
                    answer.status_code,
                    answer.text[:300],
                )
                if path == "/api/usage/summary":
                    assert answer.json()["totals"]["requests"] == 0, (name, value[:20], answer.json())
    # A value as long as a URL's query may be: answered, or refused by the server, never a 500.
    huge = _get(accounting, admin_token, "/api/usage/summary", {"model": "m" * 60_000})
    assert huge.status_code < 500, huge.status_code
    after = accounting.sql(admin_token, "SELECT count() FROM usage_events").json()["rows"]
    assert after == before
