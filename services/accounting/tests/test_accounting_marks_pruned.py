"""The running service deletes roll-up marks more than a day older than the latest (as ``bootstrap``
wires it, on a real NATS and a real chDB): the latest mark, and so every report, stays."""

from __future__ import annotations

from pathlib import Path

import nats
import orjson
import pytest
from accounting_testing import wait_until

from aqueduct_accounting import bootstrap as accounting_bootstrap
from aqueduct_accounting.application.rollups import latest_mark
from aqueduct_accounting.bootstrap import bootstrap
from aqueduct_accounting.settings import AccountingSettings
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.settings import CommonSettings

pytestmark = [pytest.mark.nats, pytest.mark.chdb]


async def test_the_service_prunes_old_marks_and_keeps_the_latest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accounting_bootstrap, "MARKS_PRUNE_INTERVAL", 0.3)
    bus = EmbeddedNats(tmp_path / "nats").start()
    nc = await nats.connect(bus.url)
    await ensure_topology(nc.jetstream())
    settings = AccountingSettings(
        rollup_interval_seconds=0.1,
        common=CommonSettings(dev_mode=True, nats_url=bus.url, data_dir=tmp_path / "data"),
    )
    service = await bootstrap(settings)
    try:
        await service.start()
        # Marks of the past three days, one an hour, as roll-ups of a quiet gateway leave them; the totals
        # they close hold 7 requests.
        hours = [f"2026-03-0{1 + h // 24} {h % 24:02d}:00:00" for h in range(72)]
        lines = [orjson.dumps({"grain": "mark", "bucket": b, "requests": 1}) for b in hours]
        lines.append(
            orjson.dumps({"grain": "day", "bucket": "2026-03-01 00:00:00", "org_id": "o", "requests": 7})
        )
        service.engine.insert_json_lines("usage_totals", b"\n".join(lines) + b"\n")
        latest = latest_mark(service.engine)

        def marks() -> int:
            return int(
                service.engine.query("SELECT count() FROM usage_totals WHERE grain = 'mark'").rows[0][0]
            )

        assert await wait_until(lambda: marks() == 25, within=20), marks()  # the latest and the day before it
        assert latest_mark(service.engine) == latest
        day = service.engine.query("SELECT sum(requests) FROM usage_by_day WHERE org_id = 'o'").rows[0][0]
        assert int(day) == 7
    finally:
        await service.stop()
        await nc.close()
        bus.stop()
