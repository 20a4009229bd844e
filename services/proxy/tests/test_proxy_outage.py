"""NATS goes away under load: the proxy keeps serving from its snapshot and loses no usage event; every
request served meanwhile is one row in ClickHouse.

Also: a graceful shutdown while the bus is down spools the events to disk, and the next start sends them.
"""

from __future__ import annotations

import asyncio
import time

import nats
import openai
import pytest

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs.bus import ensure_topology
from conftest import SnapshotWriter, spawn_proxy, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]


async def _load(base: str, value: str, stop: asyncio.Event, served: list[int], workers: int = 8) -> None:
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=value, max_retries=0)

    async def worker() -> None:
        while not stop.is_set():
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "a b"}], max_tokens=2
            )
            served[0] += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    await client.close()


async def _connect(server: EmbeddedNats):
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await ensure_topology(js)
    return nc, js


async def test_nats_outage_under_load_loses_and_duplicates_nothing(
    tmp_path, valkey_url, upstream_url, proxy_processes
):
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        nc, js = await _connect(server)
        writer = SnapshotWriter(js)
        await writer.put_endpoint("local", upstream_url)
        await writer.put_model("gpt-test", "local", "fake-upstream-model")
        value, grant = await writer.issue_token()
        await nc.close()

        process, port = spawn_proxy(server.url, valkey_url, tmp_path / "proxy")
        proxy_processes.append(process)
        base = f"http://127.0.0.1:{port}"
        await wait_token(base, value)

        stop, served = asyncio.Event(), [0]
        load = asyncio.create_task(_load(base, value, stop, served))
        await asyncio.sleep(2)
        server.kill()
        during_start = served[0]
        await asyncio.sleep(10)
        assert served[0] - during_start > 100  # still serving from the last good snapshot
        server.start()
        await asyncio.sleep(2)
        stop.set()
        await load

        nc, js = await _connect(server)
        events = await usage_events(js, grant.token_id, served[0], wait=30)
        assert len(events) == served[0]
        assert len({e.event_id for e in events}) == served[0]

        # And in ClickHouse, through accounting's own consumer: each request once, tokens as served.
        rows = await _accounted(nc, js, tmp_path / "chdb", grant.token_id, served[0])
        await nc.close()
        assert rows == (served[0], served[0], 2 * served[0])
    finally:
        server.stop()


async def _accounted(nc, js, folder, token_id: str, expected: int) -> tuple[int, int, int]:
    """Run accounting's usage consumer into a fresh chDB until ``expected`` rows of the token are in:
    (rows, distinct event ids, output tokens)."""
    from aqueduct_accounting.adapters.clickhouse import AsyncClickHouse, ClickHouse, embedded_dsn
    from aqueduct_accounting.adapters.migrations import apply_migrations
    from aqueduct_accounting.adapters.price_catalog import load_price_catalog
    from aqueduct_accounting.application.ingest import UsageIngest
    from aqueduct_accounting.domain.pricing import PriceBook
    from aqueduct_accounting.domain.usage import usage_rows_from_json
    from aqueduct_accounting.entrypoints.stream_consumer import BatchConsumer, broker_on
    from aqueduct_accounting.settings import default_migrations_dir
    from aqueduct_libs import names

    engine = ClickHouse(embedded_dsn(folder))
    apply_migrations(engine, default_migrations_dir())
    ingest = UsageIngest(AsyncClickHouse(engine), PriceBook(load_price_catalog()))

    async def store(messages: list[list[dict]]) -> None:
        await ingest.ingest_rows([row for rows in messages for row in rows])

    consumer = BatchConsumer(
        broker_on(nc),
        stream=names.USAGE_STREAM,
        subject=names.USAGE_SUBJECT,
        durable="outage-test",
        decode=usage_rows_from_json,
        store=store,
        batch_size=5000,
        flush_interval=0.2,
        max_ack_pending=50_000,
        ack_wait=30,
    )
    query = (
        "SELECT count(), uniqExact(event_id), sum(output_tokens) FROM usage_events "
        "WHERE token_id = {token:String}"
    )
    await consumer.start()
    try:
        for _ in range(150):
            result = tuple(int(v) for v in engine.query(query, {"token": token_id}).rows[0])
            if result[0] >= expected:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # anything counted twice would land by now
        return tuple(int(v) for v in engine.query(query, {"token": token_id}).rows[0])  # type: ignore[return-value]
    finally:
        await consumer.stop()
        engine.close()


async def test_shutdown_while_bus_is_down_spools_and_next_start_delivers(
    tmp_path, valkey_url, upstream_url, proxy_processes
):
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        nc, js = await _connect(server)
        writer = SnapshotWriter(js)
        await writer.put_endpoint("local", upstream_url)
        await writer.put_model("gpt-test", "local", "fake-upstream-model")
        value, grant = await writer.issue_token()
        await nc.close()

        data_dir = tmp_path / "proxy"
        process, port = spawn_proxy(
            server.url, valkey_url, data_dir, AQUEDUCT_PROXY_SHUTDOWN_DRAIN_SECONDS="1"
        )
        base = f"http://127.0.0.1:{port}"
        await wait_token(base, value)
        server.kill()
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=value, max_retries=0)
        for _ in range(25):
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "a"}], max_tokens=1
            )
        await client.close()
        process.terminate()
        assert process.wait(30) == 0
        spooled = list((data_dir / "proxy-spool").glob("usage-*.jsonl"))
        assert sum(len(p.read_bytes().splitlines()) for p in spooled) == 25

        server.start()
        started = time.monotonic()
        again, _ = spawn_proxy(server.url, valkey_url, data_dir)
        proxy_processes.append(again)
        nc, js = await _connect(server)
        events = await usage_events(js, grant.token_id, 25, wait=20)
        await nc.close()
        assert len(events) == 25 and len({e.event_id for e in events}) == 25
        assert not list((data_dir / "proxy-spool").glob("usage-*"))
        assert time.monotonic() - started < 20
    finally:
        server.stop()
