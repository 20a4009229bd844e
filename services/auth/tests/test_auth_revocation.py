"""An ended session is announced in the ``auth_revoked`` bucket, so its access tokens stop working at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, DirectoryTestResponder, sign_in
from nats.aio.client import Client as NATS
from nats.js import api as js_api
from nats.js.errors import KeyNotFoundError

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.sessions import SessionVerifier

pytestmark = pytest.mark.nats


async def revoked_until(nc: NATS, session_id: str, within: float = 5.0) -> float | None:
    kv = await nc.jetstream().key_value(names.AUTH_REVOKED_BUCKET)
    deadline = time.monotonic() + within
    while True:
        try:
            return float((await kv.get(session_id)).value or b"0")
        except KeyNotFoundError:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)


def sid_of(access_token: str, client) -> str:
    return client.app.state.container.verifier.verify(access_token).sid  # type: ignore[no-any-return]


async def test_sign_out_announces_the_session_and_the_auth_service_refuses_its_token(
    auth_client, nc: NATS
) -> None:
    async with auth_client() as client:
        ended = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        other = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        session_id = sid_of(ended["access_token"], client)
        assert (
            await client.post("/auth/logout", json={"refresh_token": ended["refresh_token"]})
        ).status_code == 204

        until = await revoked_until(nc, session_id)
        assert until is not None and time.time() + 15 * 60 - 5 < until <= time.time() + 15 * 60 + 2
        assert await revoked_until(nc, sid_of(other["access_token"], client), within=0) is None

        # The auth service's own admin routes: the ended session is refused, the other one is not.
        body = {"username": "erin", "password": "erin-password", "groups": ["staff"]}
        for _ in range(100):
            refused = await client.post(
                "/auth/local-users", json=body, headers={"Authorization": f"Bearer {ended['access_token']}"}
            )
            if refused.status_code == 401:
                break
            await asyncio.sleep(0.02)
        assert refused.status_code == 401 and "session has ended" in refused.json()["detail"]
        accepted = await client.post(
            "/auth/local-users", json=body, headers={"Authorization": f"Bearer {other['access_token']}"}
        )
        assert accepted.status_code == 201, accepted.text


async def test_a_reused_refresh_token_and_a_removed_user_end_the_session_everywhere(
    auth_client, nc: NATS, directory: DirectoryTestResponder
) -> None:
    async with auth_client(refresh_reuse_grace_seconds=0) as client:
        first = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})  # stolen copy
        assert await revoked_until(nc, sid_of(first["access_token"], client)) is not None

        second = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        directory.removed.add("local:admin")
        try:
            refused = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
            assert refused.status_code == 403
        finally:
            directory.removed.discard("local:admin")
        assert await revoked_until(nc, sid_of(second["access_token"], client)) is not None


async def signed_out_event(nc, session_id: str, within: float) -> bool:
    """Whether the AUTH stream holds a SignedOut event of the session (retried until ``within``)."""
    js = nc.jetstream()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            sub = await js.subscribe(
                names.auth_event_subject("SignedOut"),
                ordered_consumer=True,
                config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
            )
            try:
                while True:
                    msg = await sub.next_msg(timeout=0.5)
                    if session_id.encode() in msg.data:
                        return True
            except nats.errors.TimeoutError:
                pass
            finally:
                await sub.unsubscribe()
        except Exception:  # the stream is not reachable yet
            pass
        await asyncio.sleep(0.3)
    return False


async def test_sign_out_does_not_wait_for_a_bus_that_is_down(auth_client, tmp_path: Path) -> None:
    bus = EmbeddedNats(tmp_path / "own-nats").start()
    directory = DirectoryTestResponder()
    watcher_nc = await nats.connect(bus.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    await directory.start(watcher_nc)
    try:
        async with auth_client(nats_url=bus.url) as client:
            pair = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
            session_id = sid_of(pair["access_token"], client)
            bus.kill()
            started = time.monotonic()
            out = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
            # Neither the revocation nor the SignedOut event waits for the bus: both retry in the background.
            assert out.status_code == 204 and time.monotonic() - started < 1.0
            await asyncio.sleep(1.0)  # a few failed attempts while the bus is away
            bus.start()  # same port, same store: the background retries land
            assert await revoked_until(watcher_nc, session_id, within=15) is not None
            assert await signed_out_event(watcher_nc, session_id, within=15)
            # The other services would now refuse the token; so does a verifier loaded from the bus.
            verifier = SessionVerifier()
            verifier.load_jwks(client.app.state.container.keys.jwks())
            kv = await watcher_nc.jetstream().key_value(names.AUTH_REVOKED_BUCKET)
            verifier.revoke(session_id, float((await kv.get(session_id)).value or b"0"))
            with pytest.raises(Exception, match="session has ended"):
                verifier.verify(pair["access_token"])
    finally:
        await directory.stop()
        await watcher_nc.close()
        bus.stop()
