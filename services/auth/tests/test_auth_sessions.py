"""Local sign-in, session tokens verified with the JWKS from KV, refresh rotation, sign-out, local users."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from typing import Any

import httpx
import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, DirectoryTestResponder, sign_in
from nats.aio.client import Client as NATS

from aqueduct_libs import names
from aqueduct_libs.sessions import SessionVerifier

pytestmark = pytest.mark.nats


async def verifier_from_kv(nc: NATS) -> SessionVerifier:
    kv = await nc.jetstream().key_value(names.AUTH_KEYS_BUCKET)
    verifier = SessionVerifier()
    verifier.load_jwks((await kv.get("jwks")).value or b"")
    return verifier


async def test_bootstrap_admin_signs_in_and_other_services_verify_the_token(
    auth_client, nc: NATS, directory: DirectoryTestResponder, tmp_path
) -> None:
    async with auth_client() as client:
        answer = await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 15 * 60
        assert answer.headers["cache-control"] == "no-store"

        # What another service does: load the JWKS from the KV bucket and verify locally.
        claims = (await verifier_from_kv(nc)).verify(body["access_token"])
        assert claims.sub == DirectoryTestResponder.user_id("local:admin")
        assert claims.admin is True and claims.exp - claims.iat == 15 * 60
        assert directory.last("local:admin") == {
            "subject": "local:admin",
            "email": "",
            "name": "admin",
            "groups": [],
            "admin": True,
            "email_verified": False,  # no email on the account, so nothing to link by
            "renewal": False,
        }
        jwks = (await client.get("/.well-known/jwks.json")).json()
        kv_jwks = json.loads(
            (await (await nc.jetstream().key_value(names.AUTH_KEYS_BUCKET)).get("jwks")).value
        )
        assert jwks == kv_jwks and "d" not in jwks["keys"][0]

    key_file = tmp_path / "auth" / "signing_key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Nothing secret in the database: neither the password nor the refresh token in plaintext.
    database = (tmp_path / "auth" / "auth.sqlite").read_bytes()
    assert ADMIN_PASSWORD.encode() not in database and body["refresh_token"].encode() not in database


async def test_the_signing_key_survives_a_restart(auth_client, nc: NATS, tmp_path) -> None:
    async with auth_client() as client:
        token = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()["access_token"]
    async with auth_client() as client:
        # Same data folder: same key, so sessions issued before the restart stay valid.
        (await verifier_from_kv(nc)).verify(token)
        assert (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).status_code == 200


async def test_wrong_password_and_unknown_user_get_the_same_401(auth_client) -> None:
    async with auth_client() as client:
        wrong = await sign_in(client, ADMIN_USERNAME, "not the password")
        unknown = await sign_in(client, "nobody-here", ADMIN_PASSWORD)
    for answer in (wrong, unknown):
        assert answer.status_code == 401
        assert answer.json() == {"detail": "invalid username or password", "code": "invalid_credentials"}


async def test_bad_input_is_a_422_problem_naming_the_field(auth_client) -> None:
    async with auth_client() as client:
        answer = await client.post("/auth/token", json={"username": "admin"})
    assert answer.status_code == 422
    assert answer.json()["code"] == "bad_request" and "password" in answer.json()["detail"]
    assert answer.json()["field"] == "password"


async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_session(auth_client, nc: NATS) -> None:
    async with auth_client(refresh_reuse_grace_seconds=0) as client:
        first = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        second = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200
        second_pair = second.json()
        assert second_pair["refresh_token"] != first["refresh_token"]
        verifier = await verifier_from_kv(nc)
        assert verifier.verify(second_pair["access_token"]).sid == verifier.verify(first["access_token"]).sid

        # The first refresh token was spent; presenting it again means it leaked: the session ends,
        # so the thief's copy and the legitimate newer token are both refused.
        reused = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reused.status_code == 401 and reused.json()["code"] == "invalid_refresh_token"
        after = await client.post("/auth/refresh", json={"refresh_token": second_pair["refresh_token"]})
        assert after.status_code == 401


async def test_two_tabs_refreshing_at_once_do_not_end_the_session(auth_client) -> None:
    async with auth_client(refresh_reuse_grace_seconds=30) as client:
        pair = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        first = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        second = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert first.status_code == 200 and second.status_code == 401
        onward = await client.post("/auth/refresh", json={"refresh_token": first.json()["refresh_token"]})
        assert onward.status_code == 200


async def test_refresh_carries_the_roles_the_directory_gives_now(
    auth_client, nc: NATS, directory: DirectoryTestResponder
) -> None:
    async with auth_client() as client:
        first = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        verifier = await verifier_from_kv(nc)
        assert verifier.verify(first["access_token"]).org_admin is False
        directory.org_admins.add("local:admin")
        try:
            second = (
                await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
            ).json()
            assert verifier.verify(second["access_token"]).org_admin is True
            directory.removed.add("local:admin")
            refused = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
            assert refused.status_code == 403
            assert refused.json()["detail"] == "this account has been removed from the directory"
        finally:
            directory.org_admins.discard("local:admin")
            directory.removed.discard("local:admin")


async def test_a_refresh_while_the_directory_is_down_can_be_retried(
    auth_client, nc: NATS, directory: DirectoryTestResponder
) -> None:
    async with auth_client(directory_timeout=0.5) as client:
        pair = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        await directory.stop()
        try:
            down = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            assert down.status_code == 503 and down.json()["code"] == "directory_unavailable"
        finally:
            await directory.start(nc)
            await nc.flush()
        retried = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert retried.status_code == 200


async def test_sign_out_revokes_the_session(auth_client) -> None:
    async with auth_client() as client:
        pair = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()
        out = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
        assert out.status_code == 204
        again = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert again.status_code == 401
        # Signing out twice, or with a token we never issued, is harmless.
        assert (
            await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
        ).status_code == 204
        assert (await client.post("/auth/logout", json={"refresh_token": "aqr-unknown"})).status_code == 204


async def test_an_admin_adds_a_local_user_who_lands_in_the_org_of_their_groups(
    auth_client, nc: NATS, directory: DirectoryTestResponder
) -> None:
    async with auth_client() as client:
        admin = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()["access_token"]
        as_admin = {"Authorization": f"Bearer {admin}"}
        new_user = {
            "username": "Carol",
            "password": "carol-password",
            "email": "carol@example.org",
            "name": "Carol",
            "groups": ["staff"],
        }
        created = await client.post("/auth/local-users", json=new_user, headers=as_admin)
        assert created.status_code == 201, created.text
        assert created.json()["username"] == "carol"
        duplicate = await client.post("/auth/local-users", json=new_user, headers=as_admin)
        assert duplicate.status_code == 409

        carol = await sign_in(client, "carol", "carol-password")
        assert carol.status_code == 200
        claims = (await verifier_from_kv(nc)).verify(carol.json()["access_token"])
        assert claims.org == "org-staff" and claims.admin is False
        assert directory.last("local:carol")["groups"] == ["staff"]

        as_carol = {"Authorization": f"Bearer {carol.json()['access_token']}"}
        other = {**new_user, "username": "dave"}
        assert (await client.post("/auth/local-users", json=other, headers=as_carol)).status_code == 403
        assert (await client.post("/auth/local-users", json=other)).status_code == 401
        short = {**other, "password": "short"}
        assert (await client.post("/auth/local-users", json=short, headers=as_admin)).status_code == 422


async def test_key_rotation_keeps_current_sessions_valid(auth_client, nc: NATS) -> None:
    async with auth_client() as client:
        before = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()["access_token"]
        headers = {"Authorization": f"Bearer {before}"}
        rotated = await client.post("/auth/keys/rotate", headers=headers)
        assert rotated.status_code == 200 and len(rotated.json()["keys"]) == 2
        after = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()["access_token"]
        verifier = await verifier_from_kv(nc)
        verifier.verify(before)
        verifier.verify(after)
        kids = [key["kid"] for key in rotated.json()["keys"]]
        assert kids[0] != kids[1]


async def test_an_invited_user_replaces_the_one_time_password_and_an_admin_resets_a_forgotten_one(
    auth_client,
) -> None:
    async with auth_client() as client:
        admin = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()["access_token"]
        as_admin = {"Authorization": f"Bearer {admin}"}
        invited = await client.post(
            "/auth/local-users",
            json={"username": "erin", "email": "erin@example.org", "groups": ["staff"]},
            headers=as_admin,
        )
        assert invited.status_code == 201, invited.text
        assert invited.headers["cache-control"] == "no-store"
        one_time = invited.json()["one_time_password"]
        assert invited.json()["must_change_password"] is True and len(one_time) >= 12

        # The one-time password proves who it is but opens no session ...
        refused = await sign_in(client, "erin", one_time)
        assert refused.status_code == 403 and refused.json()["code"] == "password_change_required"
        # ... until the user has chosen their own.
        wrong = await client.post(
            "/auth/password", json={"username": "erin", "password": "guess-guess", "new_password": "x" * 12}
        )
        assert wrong.status_code == 401
        too_short = await client.post(
            "/auth/password", json={"username": "erin", "password": one_time, "new_password": "short"}
        )
        assert too_short.status_code == 422 and too_short.json()["field"] == "new_password"
        changed = await client.post(
            "/auth/password",
            json={"username": "erin", "password": one_time, "new_password": "erins-own-password"},
        )
        assert changed.status_code == 204
        assert (await sign_in(client, "erin", one_time)).status_code == 401
        assert (await sign_in(client, "erin", "erins-own-password")).status_code == 200

        listed = await client.get("/auth/local-users", headers=as_admin)
        erin = next(a for a in listed.json() if a["username"] == "erin")
        assert erin["must_change_password"] is False and erin["one_time_password"] is None
        assert "password_hash" not in listed.text and "erins-own-password" not in listed.text

        # Forgotten: an Admin makes a new one-time password; the old password stops working.
        erin_session = (await sign_in(client, "erin", "erins-own-password")).json()["access_token"]
        as_erin = {"Authorization": f"Bearer {erin_session}"}
        assert (
            await client.post("/auth/local-users/erin/reset-password", headers=as_erin)
        ).status_code == 403
        assert (await client.get("/auth/local-users", headers=as_erin)).status_code == 403
        reset = await client.post("/auth/local-users/erin/reset-password", headers=as_admin)
        assert reset.status_code == 200
        assert (await sign_in(client, "erin", "erins-own-password")).status_code == 401
        again = await sign_in(client, "erin", reset.json()["one_time_password"])
        assert again.json()["code"] == "password_change_required"
        missing = await client.post("/auth/local-users/nobody/reset-password", headers=as_admin)
        assert missing.status_code == 404


async def test_local_account_routes_check_the_roles_the_directory_gives_now(
    auth_client, directory: DirectoryTestResponder
) -> None:
    """The directory demotes, promotes or deactivates a user: their session token, unchanged, is refused
    or let in by the local-account routes within 2 s (the roles written into it at sign-in are not used)."""
    async with auth_client() as client:
        admin = (await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)).json()["access_token"]
        as_admin = {"Authorization": f"Bearer {admin}"}
        frank_account = {"username": "frank", "password": "frank-password", "groups": ["staff"]}
        assert (
            await client.post("/auth/local-users", json=frank_account, headers=as_admin)
        ).status_code == 201
        frank = (await sign_in(client, "frank", "frank-password")).json()["access_token"]
        as_frank = {"Authorization": f"Bearer {frank}"}
        reset_frank = "/auth/local-users/frank/reset-password"
        assert (await client.post(reset_frank, headers=as_frank)).status_code == 403
        admin_entry = {"user_id": directory.user_id("local:admin"), "org_id": None, "admin": True}
        frank_entry = {"user_id": directory.user_id("local:frank"), "org_id": "org-staff", "admin": False}
        plain = {"org_admin": False, "teams": [], "team_admin": []}
        try:
            # Demoted: the Admin's session token is refused without signing in again.
            await directory.publish_user({**admin_entry, **plain, "admin": False})
            new = {"username": "gina", "password": "gina-password", "groups": ["staff"]}
            assert await _until_status(client, "/auth/local-users", as_admin, 403, json=new)
            assert (await client.post(reset_frank, headers=as_admin)).status_code == 403
            assert (await client.get("/auth/local-users", headers=as_admin)).status_code == 403
            # Promoted: a plain user's token now may.
            await directory.publish_user({**frank_entry, **plain, "admin": True})
            assert await _until_status(client, reset_frank, as_frank, 200)
            # Deactivated: refused at once, whatever the token and the last roles said.
            await directory.deactivate("local:frank")
            assert await _until_status(client, reset_frank, as_frank, 401)
        finally:
            await directory.publish_user({**admin_entry, **plain})
            await directory.publish_user({**frank_entry, **plain})


async def _until_status(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], wanted: int, **body: Any
) -> bool:
    """The route answers ``wanted`` within 2 s (the directory's change reaches the service's watcher)."""
    started = time.monotonic()
    while time.monotonic() - started < 2.0:
        if (await client.post(path, headers=headers, **body)).status_code == wanted:
            return True
        await asyncio.sleep(0.02)
    return False
