"""The Batch API with the official OpenAI client, run by the batch worker process against the test
upstream (which has no batch API): 1,000 lines survive a SIGKILL of the worker halfway, each answered
once, with one usage event per line; refusals land in the error file; a cancelled batch stops."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from aqueduct_cli.embedded import free_port
from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher
from aqueduct_libs.tokens import hash_token
from aqueduct_proxy.batches import BatchSettings, BatchStore, setup_batches
from aqueduct_proxy.batches.store import batch_lines_publisher
from aqueduct_proxy.domain.access import check_grant
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.files import FilesSettings, FileStore, setup_files
from aqueduct_proxy.files.edge import openai_error_middleware
from conftest import ROOT, SECRET, started_broker, usage_events

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


class BatchApp:
    def __init__(self, v1: str, snapshot: Snapshot, store: BatchStore) -> None:
        self.v1, self.snapshot, self.store = v1, snapshot, store


@pytest.fixture(scope="module")
async def batch_app(bus: Any, nats_url: str) -> AsyncIterator[BatchApp]:
    broker = await started_broker(nats_url)  # what the proxy's batches feature enqueues lines with
    snapshot = Snapshot()
    watcher = KVWatcher(
        bus, names.AUTH_SNAPSHOT_BUCKET, snapshot.on_snapshot_put, snapshot.on_snapshot_delete
    )
    watcher.start()

    def authenticate(header: str | None):
        grant = snapshot.grants.get(hash_token(header[7:], SECRET.encode())) if header else None
        return check_grant(grant, snapshot, "http://ui")

    files = FileStore(bus, quota_bytes_per_user=10**9)
    store = BatchStore(bus, lines=batch_lines_publisher(broker))
    await files.start()
    await store.start()
    app = web.Application(middlewares=[openai_error_middleware])
    setup_files(app, authenticate, files, FilesSettings())
    setup_batches(app, authenticate, files, store, BatchSettings())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield BatchApp(f"http://127.0.0.1:{port}/v1", snapshot, store)
    await runner.cleanup()
    await watcher.stop()
    await broker.stop()


@pytest.fixture
def spawn_worker(nats_url: str, valkey_url: str, tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen] = []

    def spawn(**env: str) -> subprocess.Popen:
        environment = {
            **os.environ,
            "AQUEDUCT_DEV_MODE": "true",
            "AQUEDUCT_NATS_URL": nats_url,
            "AQUEDUCT_SECRET_KEY": SECRET,
            "AQUEDUCT_DATA_DIR": str(tmp_path),
            "AQUEDUCT_PROXY_REDIS_URL": valkey_url,
            "AQUEDUCT_LOG_LEVEL": "WARNING",
            # Lines of a killed worker come back after this; every worker must agree on it (one consumer).
            "AQUEDUCT_PROXY_BATCH_ACK_WAIT_SECONDS": "2",
            "AQUEDUCT_BATCH_WORKER_PORT": str(free_port()),
            **env,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "aqueduct_proxy.batches"], env=environment, cwd=ROOT
        )
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def client_for(app: BatchApp, snapshot_writer: Any, **grant: Any) -> tuple[openai.AsyncOpenAI, Any]:
    value, issued = await snapshot_writer.issue_token(**grant)
    for _ in range(200):
        if issued.token_hash in app.snapshot.grants:
            break
        await asyncio.sleep(0.02)
    return openai.AsyncOpenAI(base_url=app.v1, api_key=value, max_retries=0), issued


def jsonl(rows: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in rows))


def chat_line(custom_id: str, model: str = "gpt-test", words: str = "hello there") -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": words}], "max_tokens": 3},
    }


async def wait_status(
    client: openai.AsyncOpenAI, batch_id: str, statuses: set[str], wait: float = 120
) -> Any:
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"batch {batch_id} still {batch.status}")
        await asyncio.sleep(0.2)


async def test_thousand_lines_survive_a_killed_worker_each_answered_once(
    batch_app, snapshot, bus, spawn_worker
):
    client, grant = await client_for(batch_app, snapshot)
    rows = [chat_line(f"req-{i}", words=" ".join(["w"] * (i % 7 + 1))) for i in range(1000)]
    uploaded = await client.files.create(file=("input.jsonl", jsonl(rows)), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "kill-test"},
    )
    assert (batch.status, batch.request_counts.total) == ("in_progress", 1000)

    worker = spawn_worker(AQUEDUCT_PROXY_BATCH_CONCURRENCY="4")
    while len(await batch_app.store.all_results(batch.id)) < 300:
        assert worker.poll() is None, "the worker died on its own"
        await asyncio.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    done_at_kill = len(await batch_app.store.all_results(batch.id))
    assert done_at_kill < 1000, "the worker finished before it could be killed halfway"
    assert (await client.batches.retrieve(batch.id)).status == "in_progress"

    spawn_worker(AQUEDUCT_PROXY_BATCH_CONCURRENCY="16")
    finished = await wait_status(client, batch.id, {"completed", "failed", "cancelled"})

    assert finished.status == "completed" and finished.error_file_id is None
    assert (finished.request_counts.completed, finished.request_counts.failed) == (1000, 0)
    assert finished.metadata == {"job": "kill-test"}
    output = (await client.files.content(finished.output_file_id)).content.decode().splitlines()
    answers = [json.loads(line) for line in output]
    assert sorted(a["custom_id"] for a in answers) == sorted(f"req-{i}" for i in range(1000))  # each once
    by_id = {a["custom_id"]: a for a in answers}
    assert by_id["req-5"]["response"]["status_code"] == 200
    assert by_id["req-5"]["response"]["body"]["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
    assert by_id["req-5"]["response"]["body"]["usage"]["prompt_tokens"] == 6
    output_file = await client.files.retrieve(finished.output_file_id)
    assert (output_file.purpose, output_file.bytes) == ("batch_output", len("\n".join(output)) + 1)

    events = await usage_events(bus, grant.token_id, 1000, 30)
    assert len(events) == 1000 and len({e.event_id for e in events}) == 1000
    assert {(e.kind, e.batch_id, e.status_code, e.model, e.endpoint) for e in events} == {
        ("batch", batch.id, 200, "gpt-test", "local")
    }
    assert sum(e.input_tokens for e in events) == sum(i % 7 + 1 for i in range(1000))
    assert sum(e.output_tokens for e in events) == 3000


async def test_refused_lines_go_to_the_error_file_and_cancel_stops_a_batch(batch_app, snapshot, spawn_worker):
    client, _ = await client_for(batch_app, snapshot, allowed_models=["gpt-test"])
    rows = [
        chat_line("ok-1"),
        chat_line("ok-2"),
        chat_line("denied", model="other-model"),
        chat_line("missing", model="no-such-model"),
    ]
    uploaded = await client.files.create(file=("mixed.jsonl", jsonl(rows)), purpose="batch")
    mixed = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    many = await client.files.create(
        file=("many.jsonl", jsonl([chat_line(f"c{i}") for i in range(50)])), purpose="batch"
    )
    doomed = await client.batches.create(
        input_file_id=many.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelling = await client.batches.cancel(doomed.id)  # before any worker runs: nothing of it may run
    assert cancelling.status == "cancelling"

    health = free_port()
    worker = spawn_worker(AQUEDUCT_BATCH_WORKER_PORT=str(health))
    finished = await wait_status(client, mixed.id, {"completed", "failed"})
    cancelled = await wait_status(client, doomed.id, {"cancelled"})
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{health}/metrics")).text
    # The two refused lines are done and failed; the cancelled batch's lines never ran.
    assert "aqueduct_batch_worker_lines_done_total 4.0" in metrics
    assert "aqueduct_batch_worker_lines_failed_total 2.0" in metrics
    worker.terminate()
    assert await asyncio.to_thread(worker.wait, 30) == 0  # SIGTERM: lines in flight finish, clean exit

    assert (finished.request_counts.completed, finished.request_counts.failed) == (2, 2)
    ok = [json.loads(x) for x in (await client.files.content(finished.output_file_id)).content.splitlines()]
    errors = [
        json.loads(x) for x in (await client.files.content(finished.error_file_id)).content.splitlines()
    ]
    assert [o["custom_id"] for o in ok] == ["ok-1", "ok-2"]
    assert {e["custom_id"]: e["error"]["code"] for e in errors} == {
        "denied": "model_not_allowed",
        "missing": "model_not_found",
    }
    assert cancelled.request_counts.completed == 0 and cancelled.output_file_id is None
    listed = [b.id async for b in client.batches.list()]
    assert listed[:2] == [doomed.id, mixed.id] or set(listed) == {doomed.id, mixed.id}


async def test_bad_input_files_are_refused_with_openai_errors(batch_app, snapshot):
    client, _ = await client_for(batch_app, snapshot)
    not_batch = await client.files.create(file=("a.jsonl", jsonl([chat_line("a")])), purpose="user_data")
    duplicated = await client.files.create(
        file=("b.jsonl", jsonl([chat_line("a"), chat_line("a")])), purpose="batch"
    )
    broken = await client.files.create(file=("c.jsonl", io.BytesIO(b"{not json\n")), purpose="batch")
    other_url = await client.files.create(
        file=("d.jsonl", jsonl([{**chat_line("a"), "url": "/v1/embeddings"}])), purpose="batch"
    )

    for file_id, needle in (
        (not_batch.id, "purpose 'batch'"),
        (duplicated.id, "used twice"),
        (broken.id, "not valid JSON"),
        (other_url.id, "differs from the batch's endpoint"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert needle in refused.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(
            input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        await client.batches.retrieve("batch_missing")
