"""The directory and a running proxy over the real bus: a revoked, regenerated or expired token is refused.

The proxy runs as its own process (``python -m aqueduct_proxy``), exactly as in production; the test
measures how long a revoke takes to turn into a 401 at the proxy.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from directory_testkit import SECRET, common_settings, make_world, wait_until

from aqueduct_cli.embedded import EmbeddedNats, free_port
from aqueduct_directory.bootstrap import bootstrap
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.settings import DirectorySettings

pytestmark = [pytest.mark.nats, pytest.mark.slow]


@pytest.fixture
async def running(tmp_path, upstream_url):
    server = EmbeddedNats(tmp_path / "nats").start()
    service = await bootstrap(DirectorySettings(common=common_settings(server.url, tmp_path / "data")))
    await service.start()
    port = free_port()
    env = {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_SECRET_KEY": SECRET.decode(),
        "AQUEDUCT_NATS_URL": server.url,
        "AQUEDUCT_DATA_DIR": str(tmp_path / "proxy-data"),
        "AQUEDUCT_PROXY_PORT": str(port),
        "AQUEDUCT_PROXY_REDIS_URL": "",
    }
    proxy = await asyncio.create_subprocess_exec(sys.executable, "-m", "aqueduct_proxy", env=env)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            yield service, http
    finally:
        proxy.terminate()
        await asyncio.wait_for(proxy.wait(), 15)
        await service.stop()
        server.stop()


async def status(http: httpx.AsyncClient, value: str) -> int:
    try:
        return (await http.get("/v1/models", headers={"Authorization": f"Bearer {value}"})).status_code
    except httpx.TransportError:
        return 0


async def test_a_running_proxy_refuses_revoked_regenerated_and_expired_tokens(running, upstream_url):
    service, http = running
    app = service.directory
    world = make_world(app)
    app.register_endpoint(SYSTEM, "fake", upstream_url)
    app.register_model(SYSTEM, "fake-model", "fake")
    issued = app.issue_token(world.p(world.member), "laptop")
    value = issued["value"]

    async def accepted() -> bool:
        return await status(http, value) == 200

    await wait_until(accepted, within=60, interval=0.1)  # the proxy started and loaded the snapshot

    # Regenerate: the old value is refused, the new one accepted.
    again = app.regenerate_token(world.p(world.member), issued["token"]["id"])["value"]

    async def regenerated() -> bool:
        return await status(http, value) == 401 and await status(http, again) == 200

    regenerate_seconds = await wait_until(regenerated, within=5, interval=0.01)

    # Revoke: measured from the command to the proxy's first 401.
    started = time.perf_counter()
    app.revoke_token(world.p(world.member), issued["token"]["id"])

    async def revoked() -> bool:
        return await status(http, again) == 401

    await wait_until(revoked, within=5, interval=0.005)
    revoke_seconds = time.perf_counter() - started

    # Expiry needs no event: the proxy compares the grant's expiry with its clock.
    soon = app.issue_token(
        world.p(world.member), "short", expires_at=datetime.now(UTC) + timedelta(seconds=2)
    )

    async def soon_accepted() -> bool:
        return await status(http, soon["value"]) == 200

    await wait_until(soon_accepted, within=5, interval=0.01)

    async def soon_refused() -> bool:
        return await status(http, soon["value"]) == 401

    await wait_until(soon_refused, within=5, interval=0.05)
    print(f"proxy refused: regenerated value after {regenerate_seconds * 1000:.0f} ms, revoked after "
          f"{revoke_seconds * 1000:.0f} ms")  # fmt: skip
    assert revoke_seconds < 1.0 and regenerate_seconds < 1.0
