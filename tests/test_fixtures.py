"""The shared fixtures start real engines that answer."""

from pathlib import Path

import httpx
import nats
import pytest
import redis.asyncio as redis

pytestmark = [pytest.mark.nats, pytest.mark.valkey]


async def test_nats_has_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    info = await nc.jetstream().account_info()
    assert info.limits is not None
    await nc.close()


async def test_valkey_answers(valkey_url: str) -> None:
    client = redis.from_url(valkey_url)
    assert await client.incr("fixture-check") >= 1
    await client.aclose()


async def test_upstream_counts_words(upstream_url: str) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{upstream_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4},
        )
    assert answer.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_embedded_engines_with_credentials_refuse_anonymous_clients(tmp_path) -> None:
    from aqueduct_cli.embedded import EmbeddedNats, EmbeddedValkey

    bus = EmbeddedNats(tmp_path / "nats", token="launcher-made-token").start()
    store = EmbeddedValkey(tmp_path / "valkey", password="launcher-made-password").start()
    try:
        nc = await nats.connect(bus.url)
        await nc.close()
        with pytest.raises(nats.errors.Error, match="Authorization"):
            await nats.connect(f"nats://{bus.host}:{bus.port}", allow_reconnect=False, connect_timeout=2)
        assert await redis.from_url(store.url).ping()
        with pytest.raises(redis.AuthenticationError):
            await redis.from_url(f"redis://{store.host}:{store.port}/0").ping()
        # The secrets live in owner-only files, never on a command line other users can read.
        assert (tmp_path / "nats" / "auth.conf").stat().st_mode & 0o077 == 0
        assert b"launcher-made" not in Path(f"/proc/{bus.process.pid}/cmdline").read_bytes()  # noqa: ASYNC240
        assert b"launcher-made" not in Path(f"/proc/{store.process.pid}/cmdline").read_bytes()  # noqa: ASYNC240
    finally:
        bus.stop()
        store.stop()
