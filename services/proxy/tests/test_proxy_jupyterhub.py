"""JupyterHub users' API tokens as API keys, as in the seed's single-user server example.

Everything is real: a JupyterHub (with configurable-http-proxy) configured like the seed's hub service,
NATS, Valkey, the directory, the auth service as its own process (``python -m aqueduct_auth``) and the
proxy with its bridge; the upstream is the fake OpenAI-compatible server. The official OpenAI client
calls the proxy with a hub user's token as its ``api_key``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import nats
import openai
import pytest
from aiohttp import web
from redis.asyncio import Redis
from test_batches_process import spawn_worker
from test_batches_worker import chat_line, jsonl, wait_status

from aqueduct_cli.embedded import EmbeddedNats, free_port, wait_for_port
from aqueduct_directory.bootstrap import DirectoryService
from aqueduct_directory.bootstrap import bootstrap as bootstrap_directory
from aqueduct_directory.domain.policy import SYSTEM
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs.settings import CommonSettings
from aqueduct_proxy.bootstrap import Proxy, bootstrap
from aqueduct_proxy.entrypoints.server import OpenAIErrorsRunner
from aqueduct_proxy.features import features
from aqueduct_proxy.jupyterhub import HubBridgeSettings, JupyterHubFeature
from aqueduct_proxy.jupyterhub.bridge import HubBridge
from conftest import SECRET, error_body, proxy_settings, spawn_proxy, usage_events
from tests.support.jupyterhub import running_hub

pytestmark = [pytest.mark.nats, pytest.mark.valkey, pytest.mark.slow]

SERVICE_TOKEN = "aqueduct-proxy-test-service-token-0123456789"
SCOPE = "custom:ai-gateway:full-access"

# The seed's hub configuration (service, custom scope granted to users and their servers), plus what a
# test needs: a service that may create users and tokens, and the "staff" group (ports, proxy and files
# come from tests.support.jupyterhub.BASE_CONFIG).
HUB_CONFIG = """
c.JupyterHub.load_groups = {{"staff": {{"users": ["grace", "hopper", "katherine", "dorothy", "ada"]}}}}
c.JupyterHub.custom_scopes = {{"{scope}": {{"description": "Full access to AI gateway service."}}}}
c.JupyterHub.services = [{{"name": "ai-gateway", "api_token": "{service_token}", "display": False}}]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=ai-gateway", "{scope}"]}},
    {{
        "name": "server",
        "scopes": ["users:activity!user", "access:servers!server", "access:services!service=ai-gateway", "{scope}"],
    }},
    {{"name": "test-admin", "scopes": ["admin:users", "tokens"], "services": ["ai-gateway"]}},
]
"""


class Hub:
    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self._headers = {"Authorization": f"token {SERVICE_TOKEN}"}

    def token_for(self, user: str) -> tuple[str, str]:
        """A new API token of ``user``, like JUPYTERHUB_API_TOKEN of their server; (value, id)."""
        httpx.post(f"{self.api_url}/users/{user}", headers=self._headers, json={})  # 409 when it exists
        answer = httpx.post(f"{self.api_url}/users/{user}/tokens", headers=self._headers, json={"note": "t"})
        answer.raise_for_status()
        return answer.json()["token"], answer.json()["id"]

    def revoke(self, user: str, token_id: str) -> None:
        url = f"{self.api_url}/users/{user}/tokens/{token_id}"
        httpx.delete(url, headers=self._headers).raise_for_status()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("hub")
    with running_hub(folder, HUB_CONFIG, scope=SCOPE, service_token=SERVICE_TOKEN) as (api_url, _process):
        yield Hub(api_url)


@dataclass
class Stack:
    nats_url: str
    js: Any
    directory: DirectoryService
    auth_url: str
    data_dir: Path

    def user_id(self, hub_name: str) -> str:
        return self.directory.directory.state.users_by_subject[f"jupyterhub:{hub_name}"]


def _common(nats_url: str, data_dir: Path, auth_url: str = "") -> CommonSettings:
    return CommonSettings(
        dev_mode=True, nats_url=nats_url, data_dir=data_dir, secret_key=SECRET, auth_url=auth_url
    )


@pytest.fixture(scope="module")
async def stack(
    hub: Hub, upstream_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """A bus of its own (the directory owns the whole snapshot), the directory and the auth process."""
    folder = tmp_path_factory.mktemp("hub-stack")
    bus = EmbeddedNats(folder / "nats").start()
    directory = await bootstrap_directory(DirectorySettings(common=_common(bus.url, folder / "directory")))
    await directory.start()
    app = directory.directory
    app.create_org(SYSTEM, "notebooks", "staff", {"requests_per_minute": 600})
    app.register_endpoint(SYSTEM, "local", upstream_url)
    app.register_model(SYSTEM, "gpt-test", "local", "fake-upstream-model")
    port = free_port()
    env = {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_NATS_URL": bus.url,
        "AQUEDUCT_SECRET_KEY": SECRET,
        "AQUEDUCT_DATA_DIR": str(folder / "auth"),
        "AQUEDUCT_AUTH_PORT": str(port),
        "AQUEDUCT_AUTH_JUPYTERHUB_API_URL": hub.api_url,
        "AQUEDUCT_AUTH_JUPYTERHUB_REQUIRED_SCOPE": SCOPE,
        # Short, so a revocation test need not wait a minute; the proxy's own window is what is counted.
        "AQUEDUCT_AUTH_JUPYTERHUB_CACHE_SECONDS": "1",
        "AQUEDUCT_LOG_LEVEL": "WARNING",
    }
    auth = _spawn_auth(env, folder / "auth.log")
    nc = await nats.connect(bus.url)
    try:
        wait_for_port("127.0.0.1", port, timeout=30, process=auth)
        yield Stack(bus.url, nc.jetstream(), directory, f"http://127.0.0.1:{port}", folder)
    finally:
        auth.terminate()
        auth.wait(15)
        await nc.drain()
        await directory.stop()
        bus.stop()


def _spawn_auth(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``python -m aqueduct_auth``, the way ``aqueduct auth`` runs it."""
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "aqueduct_auth"], env=env, stdout=log, stderr=log)


@dataclass
class BridgedProxy:
    proxy: Proxy
    bridge: HubBridge
    runner: web.AppRunner
    v1: str


async def start_bridged_proxy(
    stack: Stack, valkey_url: str, auth_url: str | None = None, **bridge: Any
) -> BridgedProxy:
    common = _common(stack.nats_url, stack.data_dir / f"proxy-{free_port()}", stack.auth_url)
    settings = proxy_settings(valkey_url)
    hub = JupyterHubFeature(
        HubBridgeSettings(enabled=True, auth_url=auth_url or "", **bridge), common.auth_url
    )
    # Every feature as python -m aqueduct_proxy serves them, the bridge with this test's settings.
    listed = [hub if feature.name == hub.name else feature for feature in features(common)]
    proxy = await bootstrap(settings.model_copy(update={"common": common}), with_features=listed)
    wired = proxy.wired[hub.name]
    assert wired is not None
    await proxy.start()
    await asyncio.wait_for(proxy.watchers[0].ready.wait(), 10)
    runner = OpenAIErrorsRunner(proxy.app, access_log=None, handle_signals=False)  # as serve runs it
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return BridgedProxy(proxy, wired, runner, f"http://{settings.host}:{settings.port}/v1")


async def test_the_lean_front_end_is_on_with_every_feature(bridged: BridgedProxy) -> None:
    """Every feature's middleware is one the front end knows (it hands their requests to aiohttp)."""
    assert bridged.runner.server.front_end is not None  # type: ignore[union-attr]


@pytest.fixture(scope="module")
async def bridged(stack: Stack, valkey_url: str) -> AsyncIterator[BridgedProxy]:
    running = await start_bridged_proxy(stack, valkey_url)
    yield running
    await running.runner.cleanup()
    await running.proxy.stop()


def client(v1: str, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=v1, api_key=api_key, max_retries=0, timeout=20)


async def exchanges(v1: str) -> dict[str, float]:
    """The bridge's exchange counter from /metrics, by outcome."""
    async with aiohttp.ClientSession() as session, session.get(v1.removesuffix("/v1") + "/metrics") as r:
        text = await r.text()
    counts = {"accepted": 0.0, "refused": 0.0, "unavailable": 0.0}
    for line in text.splitlines():
        if line.startswith("aqueduct_proxy_jupyterhub_exchanges_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


async def test_a_hub_users_token_is_an_api_key_and_usage_names_the_directory_user(
    hub: Hub, stack: Stack, bridged: BridgedProxy
) -> None:
    token, _ = hub.token_for("grace")
    answer = await client(bridged.v1, token).chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "one two three"}], max_tokens=5
    )
    assert answer.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4"

    user_id = stack.user_id("grace")  # provisioned by the first exchange, in the org of the hub group
    user = stack.directory.directory.state.users[user_id]
    assert user.org_id == str(stack.directory.directory.state.org_by_name("notebooks").id)
    [event] = await usage_events(stack.js, f"user:{user_id}", 1)
    assert (event.user_id, event.org_id, event.model) == (user_id, user.org_id, "gpt-test")
    assert (event.input_tokens, event.output_tokens, event.status_code) == (3, 5, 200)
    assert token not in str(event.model_dump())

    with pytest.raises(openai.AuthenticationError) as refused:
        await client(bridged.v1, "0123456789abcdef0123456789abcdef").models.list()
    assert error_body(refused.value)["code"] == "invalid_api_key"
    assert "JupyterHub token" in error_body(refused.value)["message"]


async def test_each_token_is_exchanged_once_per_window_even_under_concurrency(
    hub: Hub, bridged: BridgedProxy
) -> None:
    token, token_id = hub.token_for("hopper")
    before = await exchanges(bridged.v1)
    hopper = client(bridged.v1, token)
    started = time.perf_counter()
    lists = await asyncio.gather(*(hopper.models.list() for _ in range(20)))
    first = time.perf_counter() - started
    assert all([m.id for m in page.data] == ["gpt-test"] for page in lists)
    after = await exchanges(bridged.v1)
    assert after["accepted"] - before["accepted"] == 1
    started = time.perf_counter()
    for _ in range(20):
        await hopper.models.list()
    cached = (time.perf_counter() - started) / 20
    second, _ = hub.token_for("hopper")  # a known user's new token: an exchange without provisioning
    started = time.perf_counter()
    await client(bridged.v1, second).models.list()
    exchanged = time.perf_counter() - started
    print(f"20 concurrent first requests (one exchange, first sign-in): {first * 1000:.0f} ms; "
          f"a known user's new token: {exchanged * 1000:.0f} ms; later requests {cached * 1000:.1f} ms each")  # fmt: skip

    # Revoked in the hub: served from the cached verdict until the window ends (60 s by default).
    hub.revoke("hopper", token_id)
    assert [m.id for m in (await hopper.models.list()).data] == ["gpt-test"]
    assert (await exchanges(bridged.v1))["accepted"] == after["accepted"] + 1  # the second token

    # Refusals are remembered too: guessing costs the hub one request per token and refusal window.
    bogus = client(bridged.v1, "not-a-real-hub-token-4242")
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            await bogus.models.list()
    assert (await exchanges(bridged.v1))["refused"] - after["refused"] == 1


async def test_a_revoked_hub_token_is_refused_after_the_window(
    hub: Hub, stack: Stack, valkey_url: str
) -> None:
    short = await start_bridged_proxy(stack, valkey_url, cache_seconds=0.5)
    try:
        token, token_id = hub.token_for("katherine")
        katherine = client(short.v1, token)
        assert (await katherine.models.list()).data
        hub.revoke("katherine", token_id)
        started = time.monotonic()

        async def refused() -> bool:
            try:
                await katherine.models.list()
            except openai.AuthenticationError:
                return True
            return False

        await _eventually(refused, True)
        # Within the proxy's window (0.5 s) plus the auth service's (1 s), and not long after.
        assert time.monotonic() - started < 3.0
    finally:
        await short.runner.cleanup()
        await short.proxy.stop()


async def test_a_hub_user_without_an_org_gets_403_and_no_auth_service_gets_503(
    hub: Hub, stack: Stack, bridged: BridgedProxy, valkey_url: str
) -> None:
    token, _ = hub.token_for("linus")  # in no hub group, so in no org
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await client(bridged.v1, token).models.list()
    assert "org" in error_body(refused.value)["message"]

    dead = await start_bridged_proxy(stack, valkey_url, auth_url=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(openai.InternalServerError) as unavailable:
            await client(dead.v1, token).models.list()
        assert unavailable.value.status_code == 503
        assert error_body(unavailable.value)["code"] == "auth_unavailable"
    finally:
        await dead.runner.cleanup()
        await dead.proxy.stop()


async def test_the_seed_example_against_python_m_aqueduct_proxy(
    hub: Hub, stack: Stack, valkey_url: str, proxy_processes: list[subprocess.Popen]
) -> None:
    """The proxy as ``aqueduct proxy`` runs it, configured by environment; the seed's synchronous client."""
    process, port = spawn_proxy(
        stack.nats_url,
        valkey_url,
        stack.data_dir / "proxy-process",
        AQUEDUCT_PROXY_JUPYTERHUB_ENABLED="true",
        AQUEDUCT_AUTH_URL=stack.auth_url,
    )
    proxy_processes.append(process)
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as http:
        await _eventually(lambda: _status(http, "/readyz"), 200, within=30)
    token, _ = hub.token_for("dorothy")

    def seed_example() -> str:
        # As in the seed: OpenAI(base_url=<gateway>/v1, api_key=os.environ["JUPYTERHUB_API_TOKEN"]).
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=20)
        completion = client.completions.create(
            model="gpt-test", prompt="The quick brown fox...", max_tokens=4
        )
        return completion.choices[0].text

    # In a thread: the directory answering the sign-in runs on this test's event loop.
    assert await asyncio.to_thread(seed_example) == "tok0 tok1 tok2 tok3"
    user_id = stack.user_id("dorothy")
    [event] = await usage_events(stack.js, f"user:{user_id}", 1)
    assert (event.user_id, event.route, event.output_tokens) == (user_id, "/v1/completions", 4)

    def bogus() -> None:
        openai.OpenAI(base_url=f"{base}/v1", api_key="no-such-hub-token", max_retries=0).models.list()

    with pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(bogus)


async def _status(http: httpx.AsyncClient, path: str) -> int:
    try:
        return (await http.get(path)).status_code
    except httpx.TransportError:
        return 0


async def test_a_batch_made_with_a_hub_token_runs_as_its_user_also_after_the_worker_restarts(
    hub: Hub, stack: Stack, bridged: BridgedProxy, valkey_url: str, proxy_processes: list[subprocess.Popen]
) -> None:
    """The batch worker (``python -m aqueduct_proxy.batches``) never sees the hub token: it runs the lines
    under the user's own grant, read from the snapshot, with the user's limits, models and usage."""
    token, _ = hub.token_for("ada")
    ada = client(bridged.v1, token)
    uploaded = await ada.files.create(
        file=("ada.jsonl", jsonl([chat_line(f"a{i}") for i in range(3)])), purpose="batch"
    )
    first = await ada.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    user_id = stack.user_id("ada")
    org_id = stack.directory.directory.state.users[user_id].org_id
    worker = spawn_worker(stack.nats_url, valkey_url, stack.data_dir / "worker-1")
    proxy_processes.append(worker)

    done = await wait_status(ada, first.id, {"completed", "failed", "cancelled"}, wait=60)
    assert (done.status, done.request_counts.completed, done.request_counts.failed) == ("completed", 3, 0)
    answers = [json.loads(x) for x in (await ada.files.content(done.output_file_id)).content.splitlines()]
    assert {a["response"]["body"]["choices"][0]["message"]["content"] for a in answers} == {"tok0 tok1 tok2"}
    events = await usage_events(stack.js, f"user:{user_id}", 3)
    assert len(events) == 3
    assert {(e.kind, e.batch_id, e.user_id, e.org_id, e.status_code) for e in events} == {
        ("batch", first.id, user_id, org_id, 200)
    }
    # The lines counted against the user's own per-minute limit (the org's 600 requests), the counter
    # their interactive requests share: ada made none, so it holds exactly the three lines.
    redis = Redis.from_url(valkey_url)
    try:
        assert await redis.hget(f"aq:rl:{{user:{user_id}}}:t:rpm", "t") == b"3"
    finally:
        await redis.aclose()

    # A new worker process knows the batch's user only from the snapshot; the user's grant as it is now
    # applies (here: the model was taken away from them).
    worker.send_signal(signal.SIGKILL)
    await asyncio.to_thread(worker.wait, 10)
    stack.directory.directory.update_user(SYSTEM, user_id, excluded_models=["gpt-test"])
    second = await ada.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    proxy_processes.append(spawn_worker(stack.nats_url, valkey_url, stack.data_dir / "worker-2"))
    refused = await wait_status(ada, second.id, {"completed", "failed", "cancelled"}, wait=60)
    assert (refused.request_counts.completed, refused.request_counts.failed) == (0, 3)
    errors = [json.loads(x) for x in (await ada.files.content(refused.error_file_id)).content.splitlines()]
    assert {e["error"]["code"] for e in errors} == {"model_not_allowed"}
    stack.directory.directory.update_user(SYSTEM, user_id, excluded_models=[])


async def test_limits_terms_and_deactivation_follow_the_directory(
    hub: Hub, stack: Stack, bridged: BridgedProxy
) -> None:
    # Runs last: it publishes terms of service, which every user of the module's directory must accept.
    app = stack.directory.directory
    token, _ = hub.token_for("grace")
    grace = client(bridged.v1, token)

    async def look() -> tuple[int, Any]:
        """(200, the models grace sees) or (status, error code)."""
        try:
            return 200, [m.id for m in (await grace.models.list()).data]
        except openai.APIStatusError as exc:
            return exc.status_code, error_body(exc)["code"]

    assert await look() == (200, ["gpt-test"])
    user_id = stack.user_id("grace")

    app.update_user(SYSTEM, user_id, excluded_models=["gpt-test"])
    await _eventually(look, (200, []))
    app.update_user(SYSTEM, user_id, excluded_models=[])
    await _eventually(look, (200, ["gpt-test"]))

    app.publish_terms(SYSTEM, "v1", "https://ui.test/terms")
    await _eventually(look, (403, "terms_not_accepted"))
    app.accept_terms(app.principal(user_id), "v1")
    await _eventually(look, (200, ["gpt-test"]))

    # Limits count per user ("user:<id>"): one chat completion a minute.
    app.update_user(SYSTEM, user_id, limits={"requests_per_minute": 1})

    async def chat() -> tuple[int, Any]:
        try:
            await grace.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}]
            )
            return 200, None
        except openai.APIStatusError as exc:
            return exc.status_code, error_body(exc)["code"]

    await _eventually(chat, (429, "rate_limit_exceeded"))

    app.deactivate_user(SYSTEM, user_id)
    await _eventually(look, (401, "invalid_api_key"))


async def _eventually(probe: Any, expected: Any, within: float = 5.0) -> None:
    """Until ``await probe()`` answers ``expected``: a directory change reaching the proxy over the bus."""
    deadline = time.monotonic() + within
    while (found := await probe()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"still {found!r}, not {expected!r}, after {within}s")
        await asyncio.sleep(0.05)
