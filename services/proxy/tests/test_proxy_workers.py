"""Several worker processes on one port (SO_REUSEPORT): all serve, and SIGTERM stops every one."""

from __future__ import annotations

import asyncio
import os

import openai
import pytest

from conftest import spawn_proxy, wait_token

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


def _spawned_workers(pid: int) -> list[int]:
    return [c for c in _children(pid) if "spawn_main" in open(f"/proc/{c}/cmdline").read()]


def _any_alive(pids: list[int]) -> bool:
    return any(os.path.exists(f"/proc/{pid}") for pid in pids)


async def test_two_workers_share_the_port_and_stop_together(nats_url, valkey_url, snapshot, tmp_path):
    process, port = spawn_proxy(nats_url, valkey_url, tmp_path, AQUEDUCT_PROXY_WORKERS="2")
    try:
        base = f"http://127.0.0.1:{port}"
        value, _ = await snapshot.issue_token()
        await wait_token(base, value)
        workers = _spawned_workers(process.pid)
        assert len(workers) == 1, "the second worker process was not started"
        for _ in range(20):  # fresh connections land on either process
            async with openai.AsyncOpenAI(base_url=base + "/v1", api_key=value, max_retries=0) as client:
                answer = await client.chat.completions.create(
                    model="gpt-test", messages=[{"role": "user", "content": "x"}], max_tokens=1
                )
                assert answer.choices[0].message.content == "tok0"
    finally:
        process.terminate()
        assert process.wait(60) == 0
    for _ in range(50):
        if not _any_alive(workers):
            break
        await asyncio.sleep(0.1)
    assert not _any_alive(workers)
