"""A store that cannot open yet (a NATS cluster electing the leader of its stream) does not hold up the
proxy's start: it gets a moment, then opens in the background, retried until it does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aqueduct_proxy.domain.errors import StoreUnavailableError
from aqueduct_proxy.entrypoints import startup


class SlowStore:
    """Opens once ``gate`` is set; fails its first ``failures`` attempts."""

    def __init__(self, failures: int = 0) -> None:
        self.gate = asyncio.Event()
        self.failures = failures
        self.attempts = 0
        self.open = False

    async def start(self) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.attempts <= self.failures:
            raise ConnectionError("no leader yet")
        self.open = True


def _app(store: SlowStore, wait: float) -> web.Application:
    app = web.Application()
    startup.open_on_startup(app, store.start, "the test store", wait=wait)

    async def files(request: web.Request) -> web.Response:
        if not store.open:
            error = StoreUnavailableError("not yet")
            return web.json_response({"code": error.code}, status=error.status)
        return web.json_response({"code": None})

    app.router.add_get("/v1/files", files)
    return app


async def _until(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_the_app_serves_before_its_store_opens_and_the_store_opens_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(startup, "RETRY_SECONDS", 0.05)
    store = SlowStore(failures=1)
    started = time.monotonic()
    async with TestClient(TestServer(_app(store, wait=0.2))) as client:
        assert time.monotonic() - started < 2.0  # listening after the wait, not after the store
        answer = await client.get("/v1/files")
        assert answer.status == 503 and (await answer.json())["code"] == "store_unavailable"
        store.gate.set()  # the election is over: the first attempt fails, the retry opens it
        assert await _until(lambda: store.open, within=5)
        assert store.attempts == 2
        assert (await client.get("/v1/files")).status == 200


async def test_a_store_that_fails_at_once_fails_the_start() -> None:
    store = SlowStore(failures=1)
    store.gate.set()
    with pytest.raises(ConnectionError):
        async with TestClient(TestServer(_app(store, wait=1.0))):
            pass
