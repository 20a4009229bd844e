"""A call far from its limits goes upstream while Valkey checks them (``Gatekeeper.admit_ahead``); near
them, or with a budget to reserve, the check comes first. Either way the check is the same script, so
what is admitted stays exact, and a refusal found on the way is the client's answer.

A real Valkey (its clients paused with ``CLIENT PAUSE`` to hold the check back), the test upstream
(what it received, ``GET /_requests``), the proxy in process with its lean front end."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
import redis.asyncio as redis

from aqueduct_libs import names
from aqueduct_libs.snapshot import BudgetRule, Limits
from conftest import common_settings, proxy_settings, start_in_process, stop_in_process, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]

HOLD_MS = 400  # how long Valkey holds the check back (the proxy's own Valkey timeout is 2 s here)


@pytest.fixture(scope="module")
async def running(snapshot, nats_url, valkey_url, tmp_path_factory):
    proxy = await start_in_process(
        proxy_settings(valkey_url, redis_timeout_seconds=2.0),
        common_settings(nats_url, tmp_path_factory.mktemp("ahead-data")),
    )
    yield proxy
    await stop_in_process(proxy)


async def _token(snapshot, running, limits: Limits) -> tuple[str, str]:
    value, grant = await snapshot.issue_token(limits=limits)
    await wait_token(running.base_url, value)
    return value, grant.token_id


async def _chat(client: httpx.AsyncClient, running, value: str, marker: str) -> httpx.Response:
    return await client.post(
        running.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {value}"},
        json={"model": "gpt-test", "messages": [{"role": "user", "content": marker}], "max_tokens": 2},
    )


async def _received(client: httpx.AsyncClient, upstream_url: str, marker: str) -> bool:
    bodies = (await client.get(upstream_url.removesuffix("/v1") + "/_requests")).json()
    return any(marker in str(body) for body in bodies)


async def _while_valkey_holds(
    client, running, upstream_url, valkey_url, value
) -> tuple[bool, httpx.Response]:
    """Send one call while Valkey holds every command back: whether the upstream had it before Valkey
    answered, and the client's answer."""
    marker = f"marker-{uuid.uuid4().hex}"
    admin = redis.from_url(valkey_url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", HOLD_MS, "ALL")
        paused_at = time.monotonic()
        call = asyncio.create_task(_chat(client, running, value, marker))
        seen = False
        while time.monotonic() - paused_at < HOLD_MS / 1000 * 0.6 and not seen:
            await asyncio.sleep(0.02)
            seen = await _received(client, running.upstream_url, marker)
        assert time.monotonic() - paused_at < HOLD_MS / 1000, "looked after Valkey was released"
        return seen, await call
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()


@pytest.fixture
def upstream_of(running, upstream_url):
    running.upstream_url = upstream_url
    return running


async def test_far_from_its_limits_a_call_reaches_the_upstream_before_valkey_answers(
    snapshot, upstream_of, valkey_url
):
    running = upstream_of
    value, _ = await _token(snapshot, running, Limits(requests_per_minute=10_000_000))
    async with httpx.AsyncClient(timeout=10) as client:
        first = await _chat(client, running, value, "first")  # the counter's first answer, seen here
        assert first.status_code == 200
        reached, answer = await _while_valkey_holds(client, running, running.upstream_url, valkey_url, value)
    assert reached, "the call waited for Valkey although its limit was far"
    assert answer.status_code == 200
    # The answer still carries what the check said: the headers come from Valkey's answer.
    assert answer.headers["x-ratelimit-limit-requests"] == "10000000"
    assert answer.headers["x-ratelimit-remaining-requests"] == str(10_000_000 - 2)


async def test_near_its_limits_a_call_waits_for_valkey(snapshot, upstream_of, valkey_url):
    running = upstream_of
    value, _ = await _token(snapshot, running, Limits(requests_per_minute=500))  # under 1,000 calls' room
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await _chat(client, running, value, "first")).status_code == 200
        reached, answer = await _while_valkey_holds(client, running, running.upstream_url, valkey_url, value)
    assert not reached, "the call went upstream before its limit was checked"
    assert answer.status_code == 200
    assert answer.headers["x-ratelimit-remaining-requests"] == "498"


async def test_a_first_call_waits_for_valkey(snapshot, upstream_of, valkey_url):
    """Nothing seen of the counter yet (a fresh token, a restarted replica): the check comes first."""
    running = upstream_of
    value, _ = await _token(snapshot, running, Limits(requests_per_minute=10_000_000))
    async with httpx.AsyncClient(timeout=10) as client:
        reached, answer = await _while_valkey_holds(client, running, running.upstream_url, valkey_url, value)
    assert not reached
    assert answer.status_code == 200


async def test_a_refusal_found_on_the_way_is_the_answer(snapshot, upstream_of, valkey_url):
    """The limit looked far from here, but other replicas used it up meanwhile: Valkey refuses, the
    client gets the refusal (429, the limit headers), not the upstream's answer."""
    running = upstream_of
    limit = 100_000
    value, token_id = await _token(snapshot, running, Limits(requests_per_minute=limit))
    admin = redis.from_url(valkey_url)
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            assert (await _chat(client, running, value, "first")).status_code == 200
            # What other replicas' calls would have left in the counter: the whole limit used.
            await admin.hset(f"aq:rl:{{{token_id}}}:t:rpm", "t", limit)
            marker = f"marker-{uuid.uuid4().hex}"
            refused = await _chat(client, running, value, marker)
            again = await _chat(client, running, value, "again")  # now it is known near: checked first
        finally:
            await admin.aclose()
        reached = await _received(client, running.upstream_url, marker)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["type"] == "requests"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(refused.headers["retry-after"]) >= 1
    assert reached  # it had gone upstream: that call was dropped
    assert again.status_code == 429


async def test_with_a_budget_to_reserve_the_check_comes_first(snapshot, upstream_of, valkey_url):
    """A budget's reservation travels with the limits' check: no call goes upstream before it."""
    running = upstream_of
    value, _ = await _token(snapshot, running, Limits(requests_per_minute=10_000_000))
    grant = snapshot.tokens[value]
    rule = BudgetRule(scope="user", scope_id=grant.user_id, monthly_nanos=10**15)
    kv = await snapshot.js.key_value(names.AUTH_SNAPSHOT_BUCKET)
    key = names.snapshot_budget_key("user", grant.user_id)
    await kv.put(key, rule.model_dump_json().encode())
    try:
        for _ in range(200):
            if f"user.{grant.user_id}" in running.proxy.gateway.snapshot.budgets:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the budget never reached the proxy")
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await _chat(client, running, value, "first")).status_code == 200
            reached, answer = await _while_valkey_holds(
                client, running, running.upstream_url, valkey_url, value
            )
    finally:
        await kv.delete(key)
    assert not reached
    assert answer.status_code == 200
