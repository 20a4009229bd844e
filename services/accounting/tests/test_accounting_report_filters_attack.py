"""Report filters through the HTTP API with hostile values (quotes, backslashes, NUL, placeholders, SQL,
huge strings): bound as parameters, they match nothing and change nothing; never a 500."""

from __future__ import annotations

import time

import httpx
from accounting_testing import AccountingProcess

from aqueduct_libs import bounds

HOSTILE = [
    "a'b",
    "a\\'b",
    "\\",
    "x\x00y",
    "'; DROP TABLE usage_events; --",
    "' OR 1=1 --",
    "{org_id:String}",
    "\u202e\U0001f600",
    "é" * 1000,  # two bytes each: 2,000 bytes, within the 1,024 characters a stored text may have
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
    # A value as long as a URL's query may be: refused at once (no stored id or model is that long; it
    # kept the service busy for half a minute, most of it redacting its log line), the longest answered.
    for path in ("/api/usage/summary", "/api/usage/top", "/api/usage/export.csv"):
        started = time.monotonic()
        huge = _get(accounting, admin_token, path, {"model": "m" * 60_000})
        assert huge.status_code == 400, (path, huge.status_code, huge.text[:300])
        assert huge.json()["code"] == "bad_request" and "model" in huge.json()["detail"]
        assert time.monotonic() - started < 5
    longest = _get(accounting, admin_token, "/api/usage/summary", {"model": "m" * bounds.MAX_TEXT_LENGTH})
    assert longest.status_code == 200, longest.text[:300]
    assert longest.json()["totals"]["requests"] == 0
    after = accounting.sql(admin_token, "SELECT count() FROM usage_events").json()["rows"]
    assert after == before
