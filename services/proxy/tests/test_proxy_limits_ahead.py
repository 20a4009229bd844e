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


async def test_the_next_calls_take_from_a_credit_without_asking_valkey(snapshot, upstream_of, valkey_url):
    """The call checked ahead was charged for 20 more like it: the next ones are admitted here while
    Valkey answers nobody, and their headers count each call as if it had been charged alone."""
    running = upstream_of
    limit = 10_000_000
    value, _ = await _token(snapshot, running, Limits(requests_per_minute=limit))
    admin = redis.from_url(valkey_url)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await _chat(client, running, value, "first")).status_code == 200
        assert (await _chat(client, running, value, "second")).status_code == 200  # ahead: the credit
        try:
            await admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
            started = time.monotonic()
            answers = [await _chat(client, running, value, f"credit-{i}") for i in range(3)]
            elapsed = time.monotonic() - started
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()
    assert elapsed < 1.0, f"the calls waited for Valkey ({elapsed:.2f} s)"
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [int(a.headers["x-ratelimit-remaining-requests"]) for a in answers] == [
        limit - 3,
        limit - 4,
        limit - 5,
    ]


async def test_what_is_left_of_a_credit_is_given_back(snapshot, upstream_of, valkey_url):
    """A second after it was taken, the unused part of a credit leaves the counter: it then holds
    exactly the calls made."""
    running = upstream_of
    value, token_id = await _token(snapshot, running, Limits(requests_per_minute=10_000_000))
    admin = redis.from_url(valkey_url)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for i in range(4):
                assert (await _chat(client, running, value, f"call-{i}")).status_code == 200
        key = f"aq:rl:{{{token_id}}}:t:rpm"
        charged = int(await admin.hget(key, "t"))
        assert charged > 4  # the second call's credit, not all used
        deadline = time.monotonic() + 5
        while int(await admin.hget(key, "t")) != 4:
            assert time.monotonic() < deadline, f"the counter still holds {int(await admin.hget(key, 't'))}"
            await asyncio.sleep(0.1)
    finally:
        await admin.aclose()


async def test_a_credit_given_back_to_a_counter_valkey_lost_takes_nothing_below_zero(
    snapshot, upstream_of, valkey_url
):
    """Valkey lost the counter (a restart without its file, a fail-over) while a credit was out: what
    goes back takes the new counter to 0, not below (which would let calls past the limit)."""
    running = upstream_of
    value, token_id = await _token(snapshot, running, Limits(requests_per_minute=10_000_000))
    admin = redis.from_url(valkey_url)
    key = f"aq:rl:{{{token_id}}}:t:rpm"
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for i in range(2):
                assert (await _chat(client, running, value, f"call-{i}")).status_code == 200
        assert int(await admin.hget(key, "t")) > 2  # the credit is out
        await admin.delete(key)
        deadline = time.monotonic() + 5
        while not await admin.exists(key):  # the credit goes back within a second or so
            assert time.monotonic() < deadline, "the unused credit was never given back"
            await asyncio.sleep(0.1)
        fields = {k.decode(): int(v) for k, v in (await admin.hgetall(key)).items()}
    finally:
        await admin.aclose()
    assert fields["t"] == 0
    assert all(v >= 0 for v in fields.values()), fields
