"""Budgets in the product as ``aqueduct up`` assembles it: an org budget written in ``aqueduct.yaml``
reaches the proxy through the directory's snapshot, the openai SDK is refused with 429
``insufficient_quota`` once the next request's worst case no longer fits, the refusal reads as a person
needs it (whose budget, by name), and what was served (as accounting stores it) never exceeds the budget."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import openai
import pytest
from redis.asyncio import Redis

from aqueduct_libs.budgets import MARKER_KEY, Period, periods_at
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUDGET_NANOS = 100_000  # $0.0001 a day for the whole org
# The worst case of one request below: 3 words counted as tokens + chat overhead (7) at $1/M input,
# 4 output tokens at $2/M.
WORST_NANOS = (3 + 7) * 1_000 + 4 * 2_000


def _config(path: Path, upstream_url: str) -> Path:
    path.write_text(
        f"""\
default_org: default
endpoints:
  - slug: fake
    url: {upstream_url}
    provider: openai
models:
  - name: fake-model
    endpoint: fake
    upstream_model: fake-model
    input_price_per_million: 1.0
    output_price_per_million: 2.0
orgs:
  - name: default
    budgets: {{daily_usd: "0.0001"}}
"""
    )
    return path


@pytest.fixture(scope="module")
def frugal_stack(tmp_path_factory: pytest.TempPathFactory, upstream) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("budget-stack")
    running = Stack(workdir, _config(workdir / "aqueduct.yaml", upstream.url)).start()
    running.login_admin()
    yield running
    running.stop()


def test_an_org_budget_from_the_config_is_enforced_at_admission(frugal_stack: Stack) -> None:
    stack = frugal_stack
    day = periods_at(datetime.now(UTC))[0]
    value = stack.cli("tokens", "create", "--name", "frugal", "--quiet").stdout.strip()
    client = openai.OpenAI(base_url=f"{stack.urls['proxy']}/v1", api_key=value)  # default retries on
    served = 0
    deadline = time.monotonic() + 60
    with pytest.raises(openai.RateLimitError) as refused:
        while time.monotonic() < deadline:
            client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "one two three"}], max_tokens=4
            )
            served += 1
    error = json.loads(refused.value.response.text)["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert "the org daily budget of $0.0001" in error["message"]
    assert "(org 'default', id " in error["message"], error["message"]  # whose budget, by name
    assert f"It resets at {tomorrow}T00:00:00Z" in error["message"]
    assert served >= 1

    # What accounting stored for the org: every answer, at most the budget, at least the budget less one
    # request's worst case.
    query = "SELECT count(), sum(cost_nanos) FROM usage_events WHERE status_code = 200"
    for _ in range(100):
        rows = json.loads(stack.cli("sql", query, "--format", "json").stdout)
        if rows and int(rows[0]["count()"]) >= served:
            break
        time.sleep(0.1)
    cost = int(rows[0]["sum(cost_nanos)"])
    assert int(rows[0]["count()"]) == served
    assert BUDGET_NANOS - WORST_NANOS <= cost <= BUDGET_NANOS

    # The launcher gave accounting the proxy's Valkey: it reconciled the org's counter there, and the
    # counter holds what accounting stored.
    asyncio.run(_check_counters(stack, cost, day))


async def _check_counters(stack: Stack, cost: int, day: Period) -> None:
    # runtime.json names Valkey's address only; its password is in the embedded server's owner-only
    # config file, as the machine's operator would find it.
    runtime = json.loads((stack.data_dir / "runtime.json").read_text())
    # (the redacted credentials, ":[redacted]@", are no URL syntax: read the host and port after them)
    address = urlsplit("redis://" + runtime["redis_url"].rpartition("@")[2])
    [config] = [p for p in stack.data_dir.rglob("auth.conf") if p.read_text().startswith("requirepass")]
    password = json.loads(config.read_text().split(" ", 1)[1])
    valkey = Redis(host=address.hostname, port=address.port, password=password)
    try:
        assert await valkey.exists(MARKER_KEY)
        if periods_at(datetime.now(UTC))[0] != day:  # the requests' day's counter is not today's any more
            pytest.skip("the test ran across midnight UTC")
        [key] = [k async for k in valkey.scan_iter(match=f"aq:budget:{{aqb}}:org:*:{day.label}")]
        assert [int(v or 0) for v in await valkey.hmget(key, "sn", "hn")] == [cost, 0]
    finally:
        await valkey.aclose()
