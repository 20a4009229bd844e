"""Fixtures of the proxy's tests: a snapshot written into KV as the directory would, and a running proxy."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from aiohttp import web
from nats.js import api as js_api

from aqueduct_cli.embedded import free_port, wait_for_port
from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.bus import ensure_topology
from aqueduct_libs.events import UsageRecorded
from aqueduct_libs.settings import CommonSettings
from aqueduct_libs.snapshot import EndpointRoute, Limits, ModelRoute, TokenGrant
from aqueduct_libs.tokens import generate_token, hash_token
from aqueduct_proxy.bootstrap import Proxy, bootstrap
from aqueduct_proxy.entrypoints.server import OpenAIErrorsRunner
from aqueduct_proxy.settings import ProxySettings

SECRET = "proxy-tests-secret-key-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[3]


@dataclass
class SnapshotWriter:
    """Writes auth snapshot entries into the KV bucket, the way the directory's projection does."""

    js: Any
    tokens: dict[str, TokenGrant] = field(default_factory=dict)

    async def put_endpoint(self, slug: str, url: str, **extra: Any) -> None:
        kv = await self.js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        await kv.put(
            names.snapshot_endpoint_key(slug),
            EndpointRoute(slug=slug, url=url, **extra).model_dump_json().encode(),
        )

    async def put_model(self, name: str, endpoint: str, upstream_model: str, **extra: Any) -> None:
        kv = await self.js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        route = ModelRoute(name=name, endpoint=endpoint, upstream_model=upstream_model, **extra)
        await kv.put(names.snapshot_model_key(name), route.model_dump_json().encode())

    async def issue_token(self, limits: Limits | None = None, **extra: Any) -> tuple[str, TokenGrant]:
        value = generate_token()
        token_hash = hash_token(value, SECRET.encode())
        token_id = "tok-" + uuid.uuid4().hex[:12]
        fields: dict[str, Any] = {"user_id": "user-" + token_id, "org_id": "org-1", "team_id": "team-1"}
        fields.update(extra)
        grant = TokenGrant(
            token_id=token_id, token_hash=token_hash, name="test", limits=limits or Limits(), **fields
        )
        kv = await self.js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        await kv.put(names.snapshot_token_key(token_hash), grant.model_dump_json().encode())
        self.tokens[value] = grant
        return value, grant

    async def delete_token(self, value: str) -> None:
        kv = await self.js.key_value(names.AUTH_SNAPSHOT_BUCKET)
        await kv.delete(names.snapshot_token_key(hash_token(value, SECRET.encode())))


async def started_broker(url: str) -> Any:
    """A service's FastStream broker, started (what ``UsagePublisher`` is given in the proxy)."""
    broker = new_broker(url, "proxy-test")
    await broker.start()
    return broker


def usage_event(token_id: str, i: int) -> UsageRecorded:
    """A usage event of ``token_id`` whose output tokens number ``i`` (tests tell events apart by it)."""
    return UsageRecorded(
        token_id=token_id,
        user_id="u",
        org_id="o",
        endpoint="local",
        model="m",
        route="/v1/chat/completions",
        status_code=200,
        output_tokens=i,
    )


def read_usage_message(data: bytes) -> list[UsageRecorded]:
    """The events of one usage message: a ``UsageRecorded`` object, or a JSON array of them."""
    document = orjson.loads(data)
    items = document if isinstance(document, list) else [document]
    return [UsageRecorded.model_validate(item) for item in items]


async def usage_events(js: Any, token_id: str, expected: int, wait: float = 10.0) -> list[UsageRecorded]:
    """Read the usage events of one token from JetStream (waiting until ``expected`` have arrived)."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        sub = await js.subscribe(
            names.USAGE_SUBJECT,
            ordered_consumer=True,
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
        )
        events = []
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                events += read_usage_message(msg.data)
        finally:
            await sub.unsubscribe()
        mine = [e for e in events if e.token_id == token_id]
        if len(mine) >= expected or asyncio.get_running_loop().time() > deadline:
            return mine


@pytest.fixture(scope="session")
async def bus(nats_url: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_topology(js)
    yield js
    await nc.close()


@pytest.fixture(scope="session")
async def snapshot(bus: Any, upstream_url: str) -> SnapshotWriter:
    writer = SnapshotWriter(bus)
    await writer.put_endpoint("local", upstream_url)
    await writer.put_model("gpt-test", "local", "fake-upstream-model")
    await writer.put_model("other-model", "local", "fake-other")
    return writer


def proxy_settings(valkey_url: str, **extra: Any) -> ProxySettings:
    return ProxySettings(
        host="127.0.0.1", port=free_port(), redis_url=valkey_url, retry_backoff_seconds=0.01, **extra
    )


def common_settings(nats_url: str, data_dir: Path) -> CommonSettings:
    return CommonSettings(dev_mode=True, nats_url=nats_url, data_dir=data_dir, secret_key=SECRET)


@dataclass
class RunningProxy:
    proxy: Proxy
    base_url: str  # http://host:port
    runner: web.AppRunner

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"


async def start_in_process(settings: ProxySettings, common: CommonSettings) -> RunningProxy:
    proxy = await bootstrap(settings.model_copy(update={"common": common}), with_features=())
    await proxy.start()
    await asyncio.wait_for(proxy.watchers[0].ready.wait(), 10)
    # As ``bootstrap.serve`` runs it: the lean front end first, aiohttp for the rest.
    runner = OpenAIErrorsRunner(
        proxy.app, max_header_bytes=settings.max_header_bytes, access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return RunningProxy(proxy, f"http://{settings.host}:{settings.port}", runner)


async def stop_in_process(running: RunningProxy) -> None:
    await running.runner.cleanup()
    await running.proxy.stop()


@pytest.fixture(scope="session")
async def proxy(
    snapshot: SnapshotWriter, nats_url: str, valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningProxy]:
    running = await start_in_process(
        proxy_settings(valkey_url), common_settings(nats_url, tmp_path_factory.mktemp("proxy-data"))
    )
    yield running
    await stop_in_process(running)


def spawn_proxy(
    nats_url: str, valkey_url: str, data_dir: Path, port: int | None = None, **env: str
) -> tuple[subprocess.Popen, int]:
    """``python -m aqueduct_proxy`` as its own process, the way ``aqueduct proxy`` runs it."""
    port = port or free_port()
    environment = {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_NATS_URL": nats_url,
        "AQUEDUCT_SECRET_KEY": SECRET,
        "AQUEDUCT_DATA_DIR": str(data_dir),
        "AQUEDUCT_PROXY_PORT": str(port),
        "AQUEDUCT_PROXY_REDIS_URL": valkey_url,
        "AQUEDUCT_LOG_LEVEL": "WARNING",
        **env,
    }
    process = subprocess.Popen([sys.executable, "-m", "aqueduct_proxy"], env=environment, cwd=ROOT)
    wait_for_port("127.0.0.1", port, timeout=30, process=process)
    return process, port


@pytest.fixture
def proxy_processes() -> Iterator[list[subprocess.Popen]]:
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def error_body(exc: Any) -> dict[str, Any]:
    return json.loads(exc.response.text)["error"]


async def wait_token(base_url: str, value: str, wait: float = 10.0) -> None:
    """Wait until the proxy's snapshot knows a token just written into KV."""
    import aiohttp

    deadline = asyncio.get_running_loop().time() + wait
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(
                f"{base_url}/v1/models", headers={"Authorization": f"Bearer {value}"}
            ) as r:
                if r.status != 401:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the proxy never learned the token")
            await asyncio.sleep(0.05)
