"""The usage journal: a SIGKILLed proxy loses no usage event and none is counted twice.

Real proxy processes (``python -m aqueduct_proxy``), real NATS (killed and restarted), real Valkey.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path

import openai
import pytest

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs.bus import ensure_topology
from aqueduct_proxy.adapters.publisher import UsagePublisher
from conftest import SnapshotWriter, spawn_proxy, started_broker, usage_event, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]

N = 300


async def _connect(server: EmbeddedNats):
    broker = await started_broker(server.url)
    nc = broker.connection
    js = nc.jetstream()
    await ensure_topology(js)
    return nc, js


async def _prepare(server: EmbeddedNats, upstream_url: str) -> tuple[str, str]:
    nc, js = await _connect(server)
    writer = SnapshotWriter(js)
    await writer.put_endpoint("local", upstream_url)
    await writer.put_model("gpt-test", "local", "fake-upstream-model")
    value, grant = await writer.issue_token()
    await nc.close()
    return value, grant.token_id


async def _burst(base: str, value: str, count: int, concurrency: int = 16) -> None:
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=value, max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "a b"}], max_tokens=2
            )

    await asyncio.gather(*(one() for _ in range(count)))
    await client.close()


def _sigkill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL


def _journal_lines(spool: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in spool.glob("usage-*.wal"))


def _spool_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.glob("usage-*"))


async def _wait_spool_empty(spool: Path, wait: float = 15.0) -> list[str]:
    for _ in range(int(wait / 0.1)):
        left = _spool_files(spool)
        if not left:
            return []
        await asyncio.sleep(0.1)
    return left


async def test_sigkill_while_bus_is_down_loses_nothing(tmp_path, valkey_url, upstream_url, proxy_processes):
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        value, token_id = await _prepare(server, upstream_url)
        data_dir = tmp_path / "proxy"
        process, port = spawn_proxy(server.url, valkey_url, data_dir)
        proxy_processes.append(process)
        base = f"http://127.0.0.1:{port}"
        await wait_token(base, value)

        server.kill()  # nothing can be acknowledged from now on
        await _burst(base, value, N)
        _sigkill(process)
        spool = data_dir / "proxy-spool"
        assert _journal_lines(spool) == N  # every answered request is in the dead process's journal

        server.start()
        again, _ = spawn_proxy(server.url, valkey_url, data_dir)
        proxy_processes.append(again)
        nc, js = await _connect(server)
        events = await usage_events(js, token_id, N, wait=30)
        await nc.close()
        assert len(events) == N
        assert len({e.event_id for e in events}) == N
        assert await _wait_spool_empty(spool) == []  # taken over, delivered, deleted
    finally:
        server.stop()


async def test_sigkill_right_after_a_burst_counts_each_request_once(
    tmp_path, valkey_url, upstream_url, proxy_processes
):
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        value, token_id = await _prepare(server, upstream_url)
        data_dir = tmp_path / "proxy"
        process, port = spawn_proxy(server.url, valkey_url, data_dir)
        proxy_processes.append(process)
        base = f"http://127.0.0.1:{port}"
        await wait_token(base, value)

        await _burst(base, value, N, concurrency=32)
        _sigkill(process)  # some events acknowledged, the last ones maybe not
        spool = data_dir / "proxy-spool"
        assert _journal_lines(spool) == N  # the segment was young: not rotated, not deleted

        again, _ = spawn_proxy(server.url, valkey_url, data_dir)
        proxy_processes.append(again)
        nc, js = await _connect(server)
        events = await usage_events(js, token_id, N, wait=30)
        assert await _wait_spool_empty(spool) == []
        # Read again once the journal is re-delivered. Events that were acknowledged before the kill are
        # sent again, grouped differently, so the stream may hold them twice; each keeps its event id,
        # by which accounting counts it once (services/accounting/tests/test_accounting_exactly_once.py).
        events = await usage_events(js, token_id, N, wait=1)
        await nc.close()
        assert len({e.event_id for e in events}) == N
        by_id = {e.event_id: e for e in events}
        assert all(e == by_id[e.event_id] for e in events)  # a copy is the same event, byte for byte
    finally:
        server.stop()


async def test_live_segments_are_never_taken_over_and_acked_ones_are_deleted(nats_url, tmp_path):
    """Two publishers sharing the spool folder, as worker processes do; small segments to see rotation."""
    token_id = "tok-journal-" + uuid.uuid4().hex[:8]
    spool = tmp_path / "proxy-spool"
    broker = await started_broker(nats_url)
    nc = broker.connection
    await ensure_topology(nc.jetstream())
    owner = UsagePublisher(broker, spool, segment_bytes=2048, segment_seconds=0.2)
    # Not started: nothing is published, so the owner's segments stay pending, and locked.
    for i in range(20):
        owner.record(usage_event(token_id, i))
    owner_segments = sorted(p.name for p in spool.glob("usage-*.wal"))
    assert len(owner_segments) > 1  # rotated by size
    assert all(p.startswith(f"usage-{os.getpid()}-") for p in owner_segments)

    other = UsagePublisher(broker, spool, claim_interval=0.1)
    await other.start()
    await asyncio.sleep(0.5)
    assert other.published == 0 and other.buffered == 0  # the live owner's segments were left alone
    assert sorted(p.name for p in spool.glob("usage-*.wal")) == owner_segments

    await owner.start()  # delivers: every segment is acknowledged, then aged out and deleted
    for _ in range(50):
        if owner.published == 20 and not list(spool.glob("usage-*")):
            break
        await asyncio.sleep(0.1)
    assert owner.published == 20
    assert not list(spool.glob("usage-*"))
    await owner.stop()
    await other.stop()
    events = await usage_events(nc.jetstream(), token_id, 20)
    await nc.close()
    assert sorted(e.output_tokens for e in events) == list(range(20))


async def test_a_torn_last_line_is_dropped(nats_url, tmp_path):
    token_id = "tok-torn-" + uuid.uuid4().hex[:8]
    spool = tmp_path / "proxy-spool"
    spool.mkdir()
    lines = [
        e.event_id.encode() + b"\t" + e.model_dump_json().encode()
        for e in map(lambda i: usage_event(token_id, i), range(3))
    ]
    # A process killed in the middle of writing its third line.
    (spool / "usage-999999999-dead.wal").write_bytes(lines[0] + b"\n" + lines[1] + b"\n" + lines[2][:40])
    broker = await started_broker(nats_url)
    nc = broker.connection
    publisher = UsagePublisher(broker, spool)
    await publisher.start()
    events = await usage_events(nc.jetstream(), token_id, 2)
    assert await _wait_spool_empty(spool, 5) == []
    await publisher.stop()
    await nc.close()
    assert sorted(e.output_tokens for e in events) == [0, 1]
