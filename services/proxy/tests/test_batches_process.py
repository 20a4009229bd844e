"""The proxy as ``python -m aqueduct_proxy`` runs it (its own bootstrap wires files, batches and MCP) and
the batch worker as ``python -m aqueduct_proxy.batches``: a PDF in a chat request reaches the upstream as
text, and a batch uploaded with the official client completes with one answer and one usage event per line."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
import openai
import pytest
from test_files_inline import make_pdf

from aqueduct_cli.embedded import EmbeddedNats, free_port
from conftest import ROOT, SECRET, spawn_proxy, usage_events, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


def spawn_worker(nats_url: str, valkey_url: str, data_dir: Any, port: int | None = None) -> subprocess.Popen:
    """``python -m aqueduct_proxy.batches``, the way the launcher runs the batch worker (its health and
    metrics on ``port``, a free one by default)."""
    environment = {
        **_worker_env(nats_url, valkey_url, data_dir),
        "AQUEDUCT_BATCH_WORKER_PORT": str(port or free_port()),
    }
    return subprocess.Popen([sys.executable, "-m", "aqueduct_proxy.batches"], env=environment, cwd=ROOT)


def _worker_env(nats_url: str, valkey_url: str, data_dir: Any) -> dict[str, str]:
    return {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_NATS_URL": nats_url,
        "AQUEDUCT_SECRET_KEY": SECRET,
        "AQUEDUCT_DATA_DIR": str(data_dir),
        "AQUEDUCT_PROXY_REDIS_URL": valkey_url,
        "AQUEDUCT_LOG_LEVEL": "WARNING",
        "AQUEDUCT_PROXY_BATCH_ACK_WAIT_SECONDS": "2",
    }


async def test_proxy_process_serves_file_content_in_chat_and_batches_run_by_the_worker(
    snapshot: Any,
    bus: Any,
    nats_url: str,
    valkey_url: str,
    upstream: Any,
    tmp_path: Any,
    proxy_processes: list,
) -> None:
    process, port = spawn_proxy(nats_url, valkey_url, tmp_path / "proxy")
    proxy_processes.append(process)
    base = f"http://127.0.0.1:{port}"
    value, grant = await snapshot.issue_token()
    await wait_token(base, value)
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=value, max_retries=0)

    pdf = base64.b64encode(make_pdf("The meeting moved to room 101")).decode()
    await client.chat.completions.create(
        model="gpt-test",
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "memo.pdf"},
                    }
                ],
            }
        ],
    )
    async with aiohttp.ClientSession() as http, http.get(f"{upstream.base}/_requests") as response:
        forwarded = (await response.json())[-1]["body"]["messages"][0]["content"][0]
    assert forwarded["type"] == "text" and "The meeting moved to room 101" in forwarded["text"]

    health = f"http://127.0.0.1:{free_port()}"
    proxy_processes.append(
        spawn_worker(nats_url, valkey_url, tmp_path / "worker", int(health.rsplit(":", 1)[1]))
    )
    async with aiohttp.ClientSession() as http:
        assert await _eventually_ready(http, health)  # connected, snapshot loaded, consuming
        async with http.get(f"{health}/healthz") as answer:
            assert answer.status == 200
    rows = [
        {
            "custom_id": f"p{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        }
        for i in range(20)
    ]
    uploaded = await client.files.create(
        file=("job.jsonl", io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in rows))),
        purpose="batch",
    )
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for _ in range(600):
        batch = await client.batches.retrieve(batch.id)
        if batch.status == "completed":
            break
        await asyncio.sleep(0.1)

    assert (batch.status, batch.request_counts.completed) == ("completed", 20)
    output = (await client.files.content(batch.output_file_id)).content.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in output) == sorted(r["custom_id"] for r in rows)
    events = await usage_events(bus, grant.token_id, 21)
    assert sorted(e.kind for e in events) == ["batch"] * 20 + ["model"]
    async with aiohttp.ClientSession() as http, http.get(f"{health}/metrics") as answer:
        metrics = _samples(await answer.text())
    assert metrics["aqueduct_batch_worker_lines_done_total"] == 20
    assert metrics["aqueduct_batch_worker_lines_failed_total"] == 0
    assert metrics["aqueduct_batch_worker_lines_in_flight"] == 0


async def _eventually_ready(http: aiohttp.ClientSession, base: str, within: float = 30.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        try:
            async with http.get(f"{base}/readyz") as answer:
                if answer.status == 200:
                    return True
        except aiohttp.ClientConnectionError:
            pass  # not listening yet
        await asyncio.sleep(0.1)
    return False


def _samples(text: str) -> dict[str, float]:
    """Prometheus text format: unlabelled sample name -> value."""
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }


async def test_worker_is_ready_only_while_connected_and_says_so_when_its_port_is_taken(
    valkey_url: str, tmp_path: Any, proxy_processes: list
) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()  # its own bus, to take it away
    try:
        port = free_port()
        proxy_processes.append(spawn_worker(bus.url, valkey_url, tmp_path / "worker", port))
        health = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            assert await _eventually_ready(http, health)
            bus.stop()
            assert await _eventually_status(http, f"{health}/readyz", 503)
            async with http.get(f"{health}/healthz") as answer:
                assert answer.status == 200  # alive all the same: nothing to restart
            bus.start()  # same port: the worker reconnects and consumes again
            assert await _eventually_ready(http, health)

        taken = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "aqueduct_proxy.batches"],
            env={
                **_worker_env(bus.url, valkey_url, tmp_path / "second"),
                "AQUEDUCT_BATCH_WORKER_PORT": str(port),
            },
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert taken.returncode == 1
        assert f"cannot serve health and metrics on 127.0.0.1:{port}" in taken.stderr
        assert "AQUEDUCT_BATCH_WORKER_PORT" in taken.stderr
    finally:
        bus.stop()


async def _eventually_status(
    http: aiohttp.ClientSession, url: str, status: int, within: float = 15.0
) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        async with http.get(url) as answer:
            if answer.status == status:
                return True
        await asyncio.sleep(0.1)
    return False
