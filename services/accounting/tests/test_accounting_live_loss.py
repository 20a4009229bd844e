"""The usage table dropped while accounting runs (as an operator could on a ClickHouse server): stores
fail, nothing is dead-lettered (the engine is at fault, not the events), /readyz says ingest is stuck and
why, a stop does not hang on the failing batch, and the next start recreates the table and refills it
from the stream. The service as ``bootstrap.bootstrap`` wires it, on a real NATS and a real chDB."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import nats
import pytest
from accounting_testing import usage_event, wait_until

from aqueduct_accounting.adapters.dead_letters import DeadLetters
from aqueduct_accounting.bootstrap import AccountingService, bootstrap
from aqueduct_accounting.entrypoints.stream_consumer import broker_on
from aqueduct_accounting.settings import AccountingSettings
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.settings import CommonSettings

pytestmark = [pytest.mark.nats, pytest.mark.chdb]


def _count(service: AccountingService) -> int:
    try:
        return int(service.engine.query("SELECT count() FROM usage_events").rows[0][0])
    except Exception:
        return -1


async def _readyz(service: AccountingService) -> httpx.Response:
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://accounting") as http:
        return await http.get("/readyz")


async def test_a_usage_table_dropped_while_running(tmp_path: Path) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    js = nc.jetstream()
    await ensure_topology(js)
    settings = AccountingSettings(
        ready_stuck_seconds=1.0,
        lag_check_seconds=0.2,
        store_max_tries=2,
        flush_interval_seconds=0.2,
        common=CommonSettings(dev_mode=True, nats_url=bus.url, data_dir=tmp_path / "data"),
    )
    service = await bootstrap(settings)
    try:
        await service.start()
        for i in range(20):
            await js.publish(
                names.USAGE_SUBJECT, usage_event(i, event_id=f"live-{i}").model_dump_json().encode()
            )
        assert await wait_until(lambda: _count(service) == 20, within=20)
        assert await wait_until(service.ready, within=10), service.not_ready_reasons()

        service.engine.execute("DROP TABLE usage_events")
        for i in range(20, 25):
            await js.publish(
                names.USAGE_SUBJECT, usage_event(i, event_id=f"live-{i}").model_dump_json().encode()
            )
        assert await wait_until(lambda: not service.ready(), within=20)
        answer = await _readyz(service)
        assert answer.status_code == 503
        assert any("every store has failed" in r for r in answer.json()["reasons"]), answer.json()
        letters = broker_on(nc)
        await letters.connect()
        assert await DeadLetters(letters).list() == [], "the engine's fault: nothing is dead-lettered"

        await asyncio.wait_for(service.stop(), timeout=30)  # never hangs on the failing batch
        service = await bootstrap(settings)
        await service.start()
        assert await wait_until(lambda: _count(service) == 25, within=30), _count(service)
        assert await wait_until(service.ready, within=10), service.not_ready_reasons()
        assert (await _readyz(service)).status_code == 200
        rolled = "SELECT sum(requests) FROM usage_by_day"
        # The views write their parts just after the table's: wait for them too.
        assert await wait_until(lambda: service.engine.query(rolled).rows == [[25]], within=10)
    finally:
        await service.stop()
        await nc.close()
        bus.stop()
