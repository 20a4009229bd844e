"""The files API with the official OpenAI client: upload, list, retrieve, content, delete, owner scope,
size limit and quota, against a real NATS object store."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web

from aqueduct_cli.embedded import free_port
from aqueduct_libs import names
from aqueduct_libs.bus import KVWatcher
from aqueduct_libs.tokens import hash_token
from aqueduct_proxy.domain.access import check_grant
from aqueduct_proxy.domain.snapshot import Snapshot
from aqueduct_proxy.files import FilesSettings, FileStore, setup_files
from aqueduct_proxy.files.edge import openai_error_middleware
from conftest import SECRET

pytestmark = [pytest.mark.nats]

MAX_FILE = 1024 * 1024
QUOTA = 1536 * 1024


class FilesApp:
    def __init__(self, base_url: str, store: FileStore) -> None:
        self.v1 = base_url + "/v1"
        self.store = store


@pytest.fixture(scope="module")
async def files_app(bus: Any) -> AsyncIterator[FilesApp]:
    snapshot = Snapshot()
    watcher = KVWatcher(
        bus, names.AUTH_SNAPSHOT_BUCKET, snapshot.on_snapshot_put, snapshot.on_snapshot_delete
    )
    watcher.start()

    def authenticate(header: str | None):
        grant = snapshot.grants.get(hash_token(header[7:], SECRET.encode())) if header else None
        return check_grant(grant, snapshot, "http://ui")

    store = FileStore(bus, quota_bytes_per_user=QUOTA)
    await store.start()
    app = web.Application(middlewares=[openai_error_middleware])
    setup_files(app, authenticate, store, FilesSettings(max_file_bytes=MAX_FILE, quota_bytes_per_user=QUOTA))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    app_state = FilesApp(f"http://127.0.0.1:{port}", store)
    app_state.snapshot = snapshot  # type: ignore[attr-defined]
    yield app_state
    await runner.cleanup()
    await watcher.stop()


async def client_for(files_app: FilesApp, snapshot_writer: Any, **grant: Any) -> openai.AsyncOpenAI:
    value, issued = await snapshot_writer.issue_token(**grant)
    for _ in range(200):
        if issued.token_hash in files_app.snapshot.grants:  # type: ignore[attr-defined]
            break
        await asyncio.sleep(0.02)
    return openai.AsyncOpenAI(base_url=files_app.v1, api_key=value, max_retries=0)


async def test_upload_list_retrieve_content_delete_with_the_openai_client(files_app, snapshot):
    client = await client_for(files_app, snapshot)
    data = b'{"custom_id": "a", "method": "POST"}\n' * 3

    created = await client.files.create(file=("lines.jsonl", io.BytesIO(data)), purpose="batch")

    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        len(data),
        "lines.jsonl",
        "batch",
        "processed",
    )
    assert (await client.files.retrieve(created.id)).model_dump() == created.model_dump()
    assert (await client.files.content(created.id)).content == data
    other = await client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    listed = [f.id async for f in client.files.list()]
    assert sorted(listed) == sorted([other.id, created.id])
    assert [f.id async for f in client.files.list(purpose="batch")] == [created.id]

    deleted = await client.files.delete(created.id)

    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(created.id)
    assert [f.id async for f in client.files.list()] == [other.id]

    large = os.urandom(700 * 1024)  # several object-store chunks
    stored = await client.files.create(file=("large.bin", large), purpose="user_data")
    assert stored.bytes == len(large) and (await client.files.content(stored.id)).content == large


async def test_files_are_visible_to_their_owner_only(files_app, snapshot):
    alice = await client_for(files_app, snapshot)
    bob = await client_for(files_app, snapshot)
    mine = await alice.files.create(file=("secret.txt", b"alice only"), purpose="user_data")

    with pytest.raises(openai.NotFoundError):
        await bob.files.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        await bob.files.content(mine.id)
    with pytest.raises(openai.NotFoundError):
        await bob.files.delete(mine.id)
    assert [f.id async for f in bob.files.list()] == []
    assert (await alice.files.content(mine.id)).content == b"alice only"


async def test_a_service_account_and_its_owner_do_not_share_files(files_app, snapshot):
    personal = await client_for(files_app, snapshot, user_id="user-owner")
    service = await client_for(files_app, snapshot, user_id="user-owner", service_account_id="sa-1")
    mine = await personal.files.create(file=("diary.txt", b"personal"), purpose="user_data")
    shared = await service.files.create(file=("team.txt", b"team data"), purpose="user_data")

    with pytest.raises(openai.NotFoundError):
        await service.files.content(mine.id)
    with pytest.raises(openai.NotFoundError):
        await personal.files.delete(shared.id)
    assert [f.id async for f in service.files.list()] == [shared.id]
    assert [f.id async for f in personal.files.list()] == [mine.id]


async def test_size_limit_quota_and_bad_input_get_openai_errors(files_app, snapshot):
    client = await client_for(files_app, snapshot)

    with pytest.raises(openai.APIStatusError) as too_large:
        await client.files.create(file=("big.bin", b"x" * (MAX_FILE + 1)), purpose="user_data")
    assert too_large.value.status_code == 413
    assert too_large.value.body["code"] == "file_too_large"

    with pytest.raises(openai.BadRequestError) as bad_purpose:
        await client.files.create(file=("a.txt", b"a"), purpose="not-a-purpose")  # type: ignore[arg-type]
    assert bad_purpose.value.body["param"] == "purpose"

    await client.files.create(file=("one.bin", b"y" * MAX_FILE), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as over_quota:
        await client.files.create(file=("two.bin", b"z" * MAX_FILE), purpose="user_data")
    assert over_quota.value.body["code"] == "file_quota_exceeded"
    assert len([f async for f in client.files.list()]) == 1  # the refused upload left nothing behind

    with pytest.raises(openai.AuthenticationError):
        await openai.AsyncOpenAI(base_url=files_app.v1, api_key="aq-wrong", max_retries=0).files.list()
