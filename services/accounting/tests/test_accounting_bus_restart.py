"""The service outlives a restart of the bus: usage published after NATS comes back is still stored."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from accounting_testing import AccountingProcess, SessionKeys, publish_usage, usage_event, wait_until

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs.bus import ensure_topology

pytestmark = [pytest.mark.nats, pytest.mark.chdb, pytest.mark.slow]


async def _connected_js(url: str):
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_topology(js)
    return nc, js


async def test_ingest_resumes_after_the_bus_restarts(tmp_path: Path) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()
    service = AccountingProcess(tmp_path / "service", bus.url)
    nc, js = await _connected_js(bus.url)
    try:
        keys = SessionKeys()
        await keys.publish(js)
        admin = await keys.signed_in("admin-1", admin=True)
        service.start()

        def rows() -> int:
            answer = service.sql(admin, "SELECT count() FROM usage_events")
            return int(answer.json()["rows"][0][0]) if answer.status_code == 200 else -1

        await publish_usage(js, [usage_event(i, event_id=f"before-{i}") for i in range(50)])
        assert await wait_until(lambda: rows() == 50, within=15)
        await nc.close()

        bus.kill()
        bus.start()  # same port, same store
        nc, js = await _connected_js(bus.url)
        await publish_usage(js, [usage_event(i, event_id=f"after-{i}") for i in range(50)])

        assert await wait_until(lambda: rows() == 100, within=30), service.log_tail()
    finally:
        service.kill()
        await nc.close()
        bus.stop()
