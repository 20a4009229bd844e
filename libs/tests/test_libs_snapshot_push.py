"""Snapshot changes pushed by the directory as plain messages reach the followers: puts and deletes."""

from __future__ import annotations

import asyncio

import pytest

from aqueduct_libs import names
from aqueduct_libs.broker import new_broker
from aqueduct_libs.snapshot_push import SnapshotPusher, follow_snapshot_pushes

pytestmark = pytest.mark.nats


async def test_a_pushed_put_and_delete_reach_every_follower(nats_url: str) -> None:
    directory = new_broker(nats_url, "push-test-directory")
    await directory.start()
    proxy = new_broker(nats_url, "push-test-proxy")
    await proxy.start()
    seen: list[tuple[str, bytes | None]] = []
    arrived = asyncio.Event()

    def on_put(key: str, value: bytes) -> None:
        seen.append((key, value))
        arrived.set()

    def on_delete(key: str) -> None:
        seen.append((key, None))
        arrived.set()

    def broken(key: str, value: bytes) -> None:
        raise ValueError("a follower that cannot apply a change")

    try:
        await follow_snapshot_pushes(proxy, broken, on_delete)  # never stops the other followers
        await follow_snapshot_pushes(proxy, on_put, on_delete)
        await proxy.connection.flush()
        push = SnapshotPusher(directory)
        key = names.snapshot_token_key("abc123")
        await push(key, b'{"token_id": "t1"}')
        await push(names.SNAPSHOT_META_KEY, b'{"notification_id": 7}')  # the bucket's own: not pushed
        await push(key, None)
        await directory.connection.flush()
        async with asyncio.timeout(5):
            while len([s for s in seen if s[1] is None]) < 2:  # both followers saw the delete
                arrived.clear()
                await arrived.wait()
        assert (key, b'{"token_id": "t1"}') in seen
        assert all(k == key for k, _ in seen)
    finally:
        await directory.stop()
        await proxy.stop()
