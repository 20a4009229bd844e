"""The HTTP server wakes once a second (not uvicorn's ten times), yet stops as soon as it is asked to and
keeps answering with a Date header."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import uvicorn

from aqueduct_accounting.entrypoints.server import QuietServer


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_it_answers_and_stops_at_once_when_asked() -> None:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    server = QuietServer(config)
    serving = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/")
    assert answer.text == "ok" and "date" in answer.headers
    await asyncio.sleep(0.2)  # within a tick of one second

    asked = time.monotonic()
    server.request_exit()
    await asyncio.wait_for(serving, 5)
    assert time.monotonic() - asked < 0.5  # not at the next tick
