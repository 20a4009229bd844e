"""The directory as its own process, the way ``aqueduct up`` and containers run it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import httpx
import nats
import pytest
from directory_testkit import wait_until

from aqueduct_cli.embedded import EmbeddedNats, free_port
from aqueduct_libs import names

pytestmark = [pytest.mark.nats, pytest.mark.slow]

CONFIG = """
endpoints: [{slug: local, url: "http://127.0.0.1:9/v1"}]
models: [{name: tiny, endpoint: local}]
orgs: [{name: default, limits: {requests_per_minute: 5}}]
"""


async def test_serves_until_sigterm_then_replays_from_the_command_line(tmp_path):
    server = EmbeddedNats(tmp_path / "nats").start()
    (tmp_path / "aqueduct.yaml").write_text(CONFIG)
    port = free_port()
    env = {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_NATS_URL": server.url,
        "AQUEDUCT_DATA_DIR": str(tmp_path / "data"),
        "AQUEDUCT_CONFIG_FILE": str(tmp_path / "aqueduct.yaml"),
        "AQUEDUCT_DIRECTORY_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "aqueduct_directory", env=env)
    nc = await nats.connect(server.url)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, within=30, interval=0.1)
        reply = await nc.request(
            names.DIRECTORY_RPC_SIGN_IN,
            json.dumps({"subject": "local:admin", "admin": True}).encode(),
            timeout=20,  # the first sign-in provisions the user: slow on a loaded 2-core machine
        )
        assert json.loads(reply.data)["admin"] is True
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        replay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aqueduct_directory", "replay", env=env, stdout=asyncio.subprocess.PIPE
        )
        stdout, _ = await asyncio.wait_for(replay.communicate(), 60)
        assert replay.returncode == 0
        summary = dict(part.split("=") for part in stdout.decode().split())
        # One endpoint, one model and the signed-in admin's own grant (user.<id>).
        assert int(summary["events"]) >= 5 and int(summary["snapshot_keys"]) == 3
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await nc.drain()
        server.stop()


async def test_a_bad_value_in_aqueduct_yaml_stops_the_start_with_the_place_and_the_reason(tmp_path):
    (tmp_path / "aqueduct.yaml").write_text(
        CONFIG + "mcp_servers: [{name: tools, url: 'javascript:alert(1)'}]\n"
    )
    env = {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_NATS_URL": "nats://127.0.0.1:9",  # never reached: the file is refused first
        "AQUEDUCT_DATA_DIR": str(tmp_path / "data"),
        "AQUEDUCT_CONFIG_FILE": str(tmp_path / "aqueduct.yaml"),
        "AQUEDUCT_DIRECTORY_PORT": str(free_port()),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aqueduct_directory",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2, output.decode()
    said = output.decode()
    assert "refused, nothing applied" in said and "mcp_servers[0].url" in said, said
    assert "http:// or https://" in said and "Traceback" not in said
