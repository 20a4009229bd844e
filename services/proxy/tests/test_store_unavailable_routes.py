"""Routes of a store that is not open yet (a proxy started during a NATS election): 503 in the OpenAI
error format with an x-request-id, on every route the store backs; a batch create with a malformed
``completion_window`` is refused with 400 before the store is asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aqueduct_proxy.batches.settings import BatchSettings
from aqueduct_proxy.batches.store import BatchStore
from aqueduct_proxy.batches.wiring import BatchesFeature
from aqueduct_proxy.bootstrap import bootstrap
from aqueduct_proxy.files.settings import FilesSettings
from aqueduct_proxy.files.store import FileStore
from aqueduct_proxy.files.wiring import FilesFeature
from conftest import RunningProxy, SnapshotWriter, common_settings, proxy_settings, wait_token


@pytest.fixture(scope="module")
async def running(
    snapshot: SnapshotWriter, nats_url: str, valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningProxy]:
    settings = proxy_settings(valkey_url)
    common = common_settings(nats_url, tmp_path_factory.mktemp("proxy-stores"))
    features = [FilesFeature(FilesSettings()), BatchesFeature(BatchSettings())]
    proxy = await bootstrap(settings.model_copy(update={"common": common}), with_features=features)
    await proxy.start()
    runner = web.AppRunner(proxy.app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    yield RunningProxy(proxy, f"http://{settings.host}:{settings.port}", runner)
    await runner.cleanup()
    await proxy.stop()


@pytest.fixture
async def api_key(running: RunningProxy, snapshot: SnapshotWriter) -> str:
    value, _ = await snapshot.issue_token()
    await wait_token(running.base_url, value)
    return value


async def _call(
    running: RunningProxy, api_key: str, method: str, path: str, **kw: Any
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, running.v1 + path, headers=headers, **kw) as r,
    ):
        return r.status, await r.json(content_type=None), r.headers


async def test_a_batch_with_a_non_string_completion_window_is_a_400_in_the_openai_format(
    running: RunningProxy, api_key: str
) -> None:
    for window in (24, None, ["24h"], {"h": 24}, True, 24.0, "24H", ""):
        body = {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": window}
        status, answer, headers = await _call(running, api_key, "POST", "/batches", json=body)
        assert status == 400, (window, answer)
        error = answer["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "completion_window", error
        assert isinstance(error["message"], str) and error["message"]
        assert headers.get("x-request-id")


async def test_routes_of_a_store_not_open_yet_answer_503_store_unavailable(
    running: RunningProxy, api_key: str
) -> None:
    files = running.proxy.wired["files"]
    batches = running.proxy.wired["batches"]
    assert isinstance(files, FileStore) and isinstance(batches, BatchStore)
    opened = (files._objects, files._meta, batches._batches, batches._results)
    # As the stores are while the proxy waits for a NATS election to end.
    files._objects = files._meta = None
    batches._batches = batches._results = None
    try:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", b'{"a": 1}\n', filename="in.jsonl", content_type="application/jsonl")
        batch = {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        part = {"type": "file", "file": {"file_id": "file-x"}}
        chat = {"model": "gpt-test", "messages": [{"role": "user", "content": [part]}]}
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/files", {}),
            ("GET", "/files/file-x", {}),
            ("GET", "/files/file-x/content", {}),
            ("DELETE", "/files/file-x", {}),
            ("POST", "/files", {"data": form}),
            ("GET", "/batches", {}),
            ("GET", "/batches/batch_x", {}),
            ("POST", "/batches/batch_x/cancel", {}),
            ("POST", "/batches", {"json": batch}),
            ("POST", "/chat/completions", {"json": chat}),
        ]
        for method, path, kw in calls:
            status, answer, headers = await _call(running, api_key, method, path, **kw)
            assert status == 503, (method, path, status, answer)
            assert set(answer) == {"error"}, answer
            error = answer["error"]
            assert error["code"] == "store_unavailable" and error["type"] == "server_error", error
            assert isinstance(error["message"], str) and "param" in error, error
            assert headers.get("x-request-id"), (method, path)
    finally:
        files._objects, files._meta, batches._batches, batches._results = opened
