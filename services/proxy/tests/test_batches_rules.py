"""The batch worker's rules, at the service level (the worker wired in-process on real NATS and Valkey):
a line waits for the owner's rate limit, fails on a used-up budget or a revoked token, and a batch whose
proxy died while queueing its lines is queued again and completes."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aqueduct_libs import names
from aqueduct_libs.snapshot import Limits, QuotaDecision
from aqueduct_proxy.batches.bootstrap import WorkerProcess, bootstrap
from aqueduct_proxy.batches.domain import Batch, BatchLine
from aqueduct_proxy.batches.settings import BatchSettings, BatchWorkerSettings
from aqueduct_proxy.batches.worker import RetryLater
from aqueduct_proxy.files.settings import FilesSettings
from conftest import common_settings, proxy_settings

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


@pytest.fixture(scope="module")
async def worker(
    nats_url: str, valkey_url: str, snapshot: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    settings = BatchWorkerSettings(
        batch=BatchSettings(concurrency=4, ack_wait_seconds=2, finalize_interval_seconds=0.2),
        proxy=proxy_settings(valkey_url),
        files=FilesSettings(),
        common=common_settings(nats_url, tmp_path_factory.mktemp("batch-worker")),
    )
    process = await bootstrap(settings, consume=False)  # the tests run lines themselves
    await process.start()
    await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in process.watchers)), 10)
    yield process
    await process.stop()


async def grant_in(process: WorkerProcess, snapshot_writer: Any, **grant: Any) -> Any:
    _, issued = await snapshot_writer.issue_token(**grant)
    for _ in range(200):
        if issued.token_hash in process.worker.gateway.snapshot.grants:
            return issued
        await asyncio.sleep(0.02)
    raise TimeoutError("the worker's snapshot never learned the token")


def batch_of(grant: Any, **extra: Any) -> Batch:
    fields: dict[str, Any] = {"input_file_id": "file-none", "status": "in_progress", **extra}
    return Batch(
        id=Batch.new_id(),
        owner=grant.user_id,
        token_id=grant.token_id,
        token_hash=grant.token_hash,
        team_id=grant.team_id,
        org_id=grant.org_id,
        endpoint="/v1/chat/completions",
        **fields,
    )


def line_of(batch: Batch, number: int) -> BatchLine:
    return BatchLine(
        batch_id=batch.id,
        owner=batch.owner,
        line=number,
        custom_id=f"l{number}",
        url="/v1/chat/completions",
        body={"model": "gpt-test", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 2},
    )


async def test_a_line_over_the_rate_limit_waits_instead_of_failing(worker, snapshot):
    grant = await grant_in(worker, snapshot, limits=Limits(requests_per_minute=2))
    batch = batch_of(grant)

    first = await worker.worker.run_line(batch, line_of(batch, 0))
    second = await worker.worker.run_line(batch, line_of(batch, 1))
    with pytest.raises(RetryLater) as wait:
        await worker.worker.run_line(batch, line_of(batch, 2))

    assert (first.status_code, second.status_code) == (200, 200)
    assert 0 < wait.value.seconds <= 60


async def test_a_used_up_budget_or_a_revoked_token_fails_the_line(worker, snapshot, bus):
    broke = await grant_in(worker, snapshot)
    quota = await bus.key_value(names.QUOTA_BUCKET)
    now = datetime.now(UTC)
    decision = QuotaDecision(
        scope="user",
        scope_id=broke.user_id,
        budget="user daily budget of $1.00",
        period="day",
        until=now + timedelta(hours=1),
        decided_at=now,
    )
    await quota.put(f"user.{broke.user_id}", decision.model_dump_json().encode())
    for _ in range(200):
        if worker.worker.gateway.snapshot.quota_in_force(broke) is not None:
            break
        await asyncio.sleep(0.02)
    batch = batch_of(broke)

    refused = await worker.worker.run_line(batch, line_of(batch, 0))

    assert (refused.status_code, refused.error["code"]) == (429, "insufficient_quota")
    assert json.loads(refused.usage_event)["status_code"] == 429  # refusals are recorded too

    revoked = await grant_in(worker, snapshot)
    kv = await bus.key_value(names.AUTH_SNAPSHOT_BUCKET)
    await kv.delete(names.snapshot_token_key(revoked.token_hash))
    for _ in range(200):
        if revoked.token_hash not in worker.worker.gateway.snapshot.grants:
            break
        await asyncio.sleep(0.02)
    gone = await worker.worker.run_line(batch_of(revoked), line_of(batch_of(revoked), 0))
    assert (gone.status_code, gone.error["code"]) == (401, "token_revoked")


async def test_batch_lines_reserve_and_settle_on_the_owners_budget(worker, snapshot, bus, valkey_url):
    from redis.asyncio import Redis

    from aqueduct_libs.budgets import counter_key, periods_at
    from aqueduct_libs.pricing import Price, TokenClasses
    from aqueduct_libs.snapshot import BudgetRule

    day = periods_at(datetime.now(UTC))[0]
    await snapshot.put_model(
        "gpt-priced-batch",
        "local",
        "fake-upstream-model",
        input_price_nanos_per_token=1_000,
        output_price_nanos_per_token=2_000,
    )
    team = f"team-batch-{time.time_ns()}"
    kv = await bus.key_value(names.AUTH_SNAPSHOT_BUCKET)
    # $0.00002: a line costs $0.000006 (2 + 2 tokens) and reserves $0.000013 (its input as counted, plus
    # the chat overhead, and its max_tokens): two lines fit, the third does not.
    rule = BudgetRule(scope="team", scope_id=team, daily_nanos=20_000)
    await kv.put(names.snapshot_budget_key("team", team), rule.model_dump_json().encode())
    grant = await grant_in(worker, snapshot, team_id=team)
    for _ in range(200):
        if f"team.{team}" in worker.worker.gateway.snapshot.budgets:
            break
        await asyncio.sleep(0.02)
    batch = batch_of(grant)
    results = []
    for number in range(6):
        line = line_of(batch, number)
        line.body["model"] = "gpt-priced-batch"
        results.append(await worker.worker.run_line(batch, line))
    served = [r for r in results if r.status_code == 200]
    refused = [r for r in results if r.status_code == 429]
    assert (len(served), len(refused)) == (2, 4)
    assert all(r.error["code"] == "insufficient_quota" for r in refused)
    assert "the team daily budget of $0.00002" in refused[0].error["message"]
    cost = sum(
        Price(1_000, 2_000).cost(TokenClasses(e["input_tokens"], e["output_tokens"]))
        for e in (json.loads(r.usage_event) for r in served)
    )
    valkey = Redis.from_url(valkey_url)
    if periods_at(datetime.now(UTC))[0] != day:  # the requests' day's counter is not today's any more
        pytest.skip("the test ran across midnight UTC")
    key = counter_key("team", team, day)
    assert [int(v or 0) for v in await valkey.hmget(key, "sn", "hn")] == [cost, 0]
    await valkey.aclose()
    assert cost <= 20_000


async def test_a_batch_left_validating_by_a_dead_proxy_is_queued_again(worker, snapshot):
    grant = await grant_in(worker, snapshot)
    rows = [
        {
            "custom_id": f"s{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]},
        }
        for i in range(5)
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    stored = await worker.worker.files.save(
        grant.user_id, "stuck.jsonl", "batch", io.BytesIO(data), len(data)
    )
    # What a proxy that died right after recording the batch leaves behind: a record, no queued lines.
    stuck = batch_of(
        grant, input_file_id=stored.id, total=5, status="validating", created_at=int(time.time()) - 120
    )
    await worker.worker.store.create(stuck)
    tasks = [
        asyncio.create_task(worker.worker.consume()),
        asyncio.create_task(worker.worker.finalize_loop()),
    ]
    try:
        for _ in range(300):
            batch = await worker.worker.store.get(grant.user_id, stuck.id)
            if batch.status == "completed":
                break
            await asyncio.sleep(0.1)
    finally:
        worker.worker.stop()
        await worker.worker.drain()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    assert (batch.status, batch.completed, batch.failed) == ("completed", 5, 0)
    output = await worker.worker.files.content(grant.user_id, batch.output_file_id)
    assert sorted(json.loads(x)["custom_id"] for x in output.splitlines()) == [f"s{i}" for i in range(5)]


async def test_a_batch_past_its_completion_window_expires_with_what_is_done(worker, snapshot):
    grant = await grant_in(worker, snapshot)
    late = batch_of(grant, total=3, expires_at=int(time.time()) - 1)
    await worker.worker.store.create(late)
    done = await worker.worker.run_line(late, line_of(late, 0))
    await worker.worker.store.store_result(late.id, done)
    await worker.worker.store.enqueue([line_of(late, 1), line_of(late, 2)])  # never run: no consumer here
    finalizer = asyncio.create_task(worker.worker.finalize_loop())
    try:
        for _ in range(100):
            batch = await worker.worker.store.get(grant.user_id, late.id)
            if batch.status == "expired":
                break
            await asyncio.sleep(0.1)
    finally:
        finalizer.cancel()
        await asyncio.gather(finalizer, return_exceptions=True)

    assert (batch.status, batch.completed, batch.failed) == ("expired", 1, 0)
    assert batch.expired_at is not None and await worker.worker.store.remaining(late.id) == 0
    output = await worker.worker.files.content(grant.user_id, batch.output_file_id)
    assert [json.loads(x)["custom_id"] for x in output.splitlines()] == ["l0"]
