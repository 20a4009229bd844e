"""Sign-in attempts are rate-limited per username and per client address; sign-ins, sign-outs and
failed attempts are published as integration events on the AUTH stream."""

from __future__ import annotations

import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, DirectoryTestResponder, sign_in
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError

from aqueduct_libs import names
from aqueduct_libs.events import AuthEvent

pytestmark = pytest.mark.nats


async def test_too_many_attempts_for_one_username_get_429_even_with_the_right_password(auth_client) -> None:
    async with auth_client(sign_in_attempts_per_username=3) as client:
        for _ in range(3):
            assert (await sign_in(client, ADMIN_USERNAME, "guess")).status_code == 401
        limited = await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Another username from the same address is not affected by this username's window.
        assert (await sign_in(client, "someone-else", "guess")).status_code == 401


async def test_too_many_attempts_from_one_address_get_429(auth_client) -> None:
    async with auth_client(sign_in_attempts_per_ip=4) as client:
        # The UI signs users in server-side and names the browser in X-Forwarded-For (trusted peer).
        browser = {"X-Forwarded-For": "198.51.100.7"}
        for n in range(4):
            assert (await sign_in(client, f"user{n}", "guess", headers=browser)).status_code == 401
        assert (await sign_in(client, "user9", "guess", headers=browser)).status_code == 429
        assert (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD, headers=browser)).status_code == 429
        other_browser = {"X-Forwarded-For": "198.51.100.8"}
        assert (
            await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD, headers=other_browser)
        ).status_code == 200


async def test_a_trusted_network_names_the_client(auth_client) -> None:
    async with auth_client(sign_in_attempts_per_ip=1, trusted_proxies=["127.0.0.0/8"]) as client:
        assert (
            await sign_in(client, "u1", "guess", headers={"X-Forwarded-For": "198.51.100.1"})
        ).status_code == 401
        assert (
            await sign_in(client, "u2", "guess", headers={"X-Forwarded-For": "198.51.100.2"})
        ).status_code == 401
        assert (
            await sign_in(client, "u3", "guess", headers={"X-Forwarded-For": "198.51.100.1"})
        ).status_code == 429


async def test_an_untrusted_peer_cannot_pick_its_address(auth_client) -> None:
    async with auth_client(sign_in_attempts_per_ip=2, trusted_proxies=[]) as client:
        for n in range(2):
            spoofed = {"X-Forwarded-For": f"203.0.113.{n}"}
            assert (await sign_in(client, f"user{n}", "guess", headers=spoofed)).status_code == 401
        fresh = {"X-Forwarded-For": "203.0.113.99"}
        assert (await sign_in(client, "user5", "guess", headers=fresh)).status_code == 429


async def collect_events(nc: NATS) -> list[AuthEvent]:
    js = nc.jetstream()
    sub = await js.subscribe(f"{names.AUTH_EVENTS_SUBJECT_PREFIX}.>", ordered_consumer=True)
    events = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            events.append(AuthEvent.model_validate_json(msg.data))
            assert msg.subject == names.auth_event_subject(events[-1].type)
            assert msg.headers and msg.headers["Nats-Msg-Id"] == events[-1].event_id
    except NatsTimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return events


async def test_sign_in_sign_out_and_failures_are_published(
    auth_client, nc: NATS, directory: DirectoryTestResponder
) -> None:
    async with auth_client() as client:
        browser = {"X-Forwarded-For": "192.0.2.55"}
        assert (await sign_in(client, ADMIN_USERNAME, "wrong-password", headers=browser)).status_code == 401
        pair = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD, headers=browser)).json()
        assert (
            await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
        ).status_code == 204
    mine = [e for e in await collect_events(nc) if e.client_ip == "192.0.2.55" or e.type == "SignedOut"]
    failed, signed_in = (e for e in mine if e.type != "SignedOut")
    assert (failed.type, failed.subject, failed.reason) == (
        "SignInFailed",
        "local:admin",
        "invalid_credentials",
    )
    assert (signed_in.type, signed_in.method) == ("SignedIn", "local")
    assert signed_in.user_id == DirectoryTestResponder.user_id("local:admin")
    signed_out = next(e for e in mine if e.type == "SignedOut" and e.session_id == signed_in.session_id)
    assert signed_out.subject == "local:admin"
    # No event carries a password or a token.
    raw = " ".join(e.model_dump_json() for e in mine)
    assert ADMIN_PASSWORD not in raw and "wrong-password" not in raw and pair["refresh_token"] not in raw
