"""Signing out ends the session everywhere at once: the directory and accounting refuse its access token
within about a second, although the token has not expired, while the user's other sessions keep working.
Role changes and deactivation reach the auth and accounting services as fast, for the same token.

Real services on a real bus: the auth service and the directory in this process, accounting as its own
process (as the launcher runs it), a fresh NATS.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import jwt
import pytest

from aqueduct_auth.bootstrap import bootstrap as bootstrap_auth
from aqueduct_auth.settings import AuthSettings
from aqueduct_cli.embedded import EmbeddedNats, free_port
from aqueduct_directory.bootstrap import bootstrap as bootstrap_directory
from aqueduct_directory.settings import DirectorySettings
from aqueduct_libs.settings import CommonSettings

pytestmark = [pytest.mark.nats, pytest.mark.chdb, pytest.mark.slow]

SECRET = "sign-out-everywhere-secret-0123456789abcdef"
ADMIN, PASSWORD = "admin", "correct horse battery staple"


def common(nats_url: str, data_dir: Path) -> CommonSettings:
    return CommonSettings(dev_mode=True, nats_url=nats_url, data_dir=data_dir, secret_key=SECRET)


@asynccontextmanager
async def auth_service(nats_url: str, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    service = await bootstrap_auth(
        AuthSettings(
            bootstrap_admin_username=ADMIN,
            bootstrap_admin_password=PASSWORD,
            common=common(nats_url, data_dir),
        ),
    )
    await service.start()
    try:
        transport = httpx.ASGITransport(app=service.app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
            yield client
    finally:
        await service.stop()


@asynccontextmanager
async def directory_service(nats_url: str, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    service = await bootstrap_directory(DirectorySettings(common=common(nats_url, data_dir)))
    await service.start()
    try:
        assert await until(lambda: service.ready(), within=30) is not None, "the directory never got ready"
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://directory") as client:
            yield client
    finally:
        await service.stop()


@asynccontextmanager
async def accounting_process(nats_url: str, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    port = free_port()
    env = {
        **os.environ,
        "AQUEDUCT_DEV_MODE": "true",
        "AQUEDUCT_NATS_URL": nats_url,
        "AQUEDUCT_DATA_DIR": str(data_dir),
        "AQUEDUCT_SECRET_KEY": SECRET,
        "AQUEDUCT_ACCOUNTING_PORT": str(port),
        "AQUEDUCT_ACCOUNTING_HOST": "127.0.0.1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    process = _spawn_accounting(env, data_dir)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def ready() -> bool:
                assert process.poll() is None, (data_dir / "accounting.log").read_text()[-3000:]
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            assert await until(ready, within=90) is not None, (data_dir / "accounting.log").read_text()[
                -3000:
            ]
            yield client
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn_accounting(env: dict[str, str], data_dir: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "accounting.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "aqueduct_accounting"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


async def until(predicate: Callable[[], bool | Awaitable[bool]], within: float) -> float | None:
    """Seconds until ``predicate`` held, or None if it did not within ``within`` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    return None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_signed_out_token_is_refused_by_every_service_within_a_second(tmp_path: Path) -> None:
    bus = EmbeddedNats(tmp_path / "nats").start()
    try:
        async with (
            directory_service(bus.url, tmp_path / "directory") as directory,
            auth_service(bus.url, tmp_path / "auth") as auth,
            accounting_process(bus.url, tmp_path / "accounting") as accounting,
        ):
            ended = (await auth.post("/auth/token", json={"username": ADMIN, "password": PASSWORD})).json()
            other = (await auth.post("/auth/token", json={"username": ADMIN, "password": PASSWORD})).json()
            for token in (ended["access_token"], other["access_token"]):
                assert (await directory.get("/api/me", headers=bearer(token))).status_code == 200
                assert (await accounting.get("/api/usage/summary", headers=bearer(token))).status_code == 200

            signed_out = await auth.post("/auth/logout", json={"refresh_token": ended["refresh_token"]})
            assert signed_out.status_code == 204

            async def refused(client: httpx.AsyncClient, path: str) -> bool:
                return (await client.get(path, headers=bearer(ended["access_token"]))).status_code == 401

            directory_seconds, accounting_seconds = await asyncio.gather(
                until(lambda: refused(directory, "/api/me"), within=5),
                until(lambda: refused(accounting, "/api/usage/summary"), within=5),
            )
            print(
                f"\nsign-out reached the directory in {directory_seconds}s, accounting in {accounting_seconds}s"
            )
            assert directory_seconds is not None and directory_seconds < 1.5
            assert accounting_seconds is not None and accounting_seconds < 1.5
            answer = await directory.get("/api/me", headers=bearer(ended["access_token"]))
            assert answer.status_code == 401 and "session has ended" in answer.text
            # The same user's other session is untouched.
            assert (await directory.get("/api/me", headers=bearer(other["access_token"]))).status_code == 200
            summary = await accounting.get("/api/usage/summary", headers=bearer(other["access_token"]))
            assert summary.status_code == 200

        # Services started after the sign-out load the ended sessions before they answer /readyz.
        async with (
            directory_service(bus.url, tmp_path / "directory") as directory,
            accounting_process(bus.url, tmp_path / "accounting-late") as accounting,
        ):
            assert (await directory.get("/api/me", headers=bearer(ended["access_token"]))).status_code == 401
            assert (await directory.get("/api/me", headers=bearer(other["access_token"]))).status_code == 200
            late = await accounting.get("/api/usage/summary", headers=bearer(ended["access_token"]))
            assert late.status_code == 401
            late_other = await accounting.get("/api/usage/summary", headers=bearer(other["access_token"]))
            assert late_other.status_code == 200
    finally:
        bus.stop()


async def test_role_changes_reach_auth_and_accounting_at_once(tmp_path: Path) -> None:
    """An Admin demoted through the directory API loses, with the same session token and no new sign-in,
    accounting's ad-hoc SQL and other orgs' usage and auth's local-account creation and reset within 2 s;
    promoted again, they regain them; deactivated, the token is refused."""
    bus = EmbeddedNats(tmp_path / "nats").start()
    try:
        async with (
            directory_service(bus.url, tmp_path / "directory") as directory,
            auth_service(bus.url, tmp_path / "auth") as auth,
            accounting_process(bus.url, tmp_path / "accounting") as accounting,
        ):
            root = (await auth.post("/auth/token", json={"username": ADMIN, "password": PASSWORD})).json()
            as_root = bearer(root["access_token"])
            eve_account = {"username": "eve", "password": "eve-password-long"}
            assert (
                await auth.post("/auth/local-users", json=eve_account, headers=as_root)
            ).status_code == 201
            eve_id = (await _sign_in(auth, "eve", "eve-password-long"))[1]
            promoted = await directory.patch(f"/api/users/{eve_id}", json={"admin": True}, headers=as_root)
            assert promoted.status_code == 200, promoted.text
            eve, _ = await _sign_in(auth, "eve", "eve-password-long")  # a session token saying Admin
            as_eve = bearer(eve)

            async def answers() -> tuple[int, int, int, int]:
                made = await auth.post(
                    "/auth/local-users", json={"username": f"u{time.monotonic_ns()}"}, headers=as_eve
                )
                return (
                    (
                        await accounting.post("/api/sql", json={"query": "SELECT 1"}, headers=as_eve)
                    ).status_code,
                    (await accounting.get("/api/usage/summary?org_id=elsewhere", headers=as_eve)).status_code,
                    made.status_code,
                    (await auth.post("/auth/local-users/eve/reset-password", headers=as_eve)).status_code,
                )

            async def reaches(wanted: tuple[int, ...]) -> float:
                seconds = await until(lambda: _is(answers, wanted), within=2)
                assert seconds is not None, await answers()
                return seconds

            assert await answers() == (200, 200, 201, 200)
            demoted = await directory.patch(f"/api/users/{eve_id}", json={"admin": False}, headers=as_root)
            assert demoted.status_code == 200, demoted.text
            demotion = await reaches((403, 403, 403, 403))
            assert (
                await directory.patch(f"/api/users/{eve_id}", json={"admin": True}, headers=as_root)
            ).is_success
            promotion = await reaches((200, 200, 201, 200))
            assert (await directory.delete(f"/api/users/{eve_id}", headers=as_root)).status_code == 204
            deactivation = await reaches((401, 401, 401, 401))
            print(
                f"\nroles reached auth and accounting: demotion {demotion:.3f}s, promotion {promotion:.3f}s,"
            )
            print(f"deactivation {deactivation:.3f}s")
    finally:
        bus.stop()


async def _sign_in(auth: httpx.AsyncClient, username: str, password: str) -> tuple[str, str]:
    """(access token, directory user id)."""
    answer = await auth.post("/auth/token", json={"username": username, "password": password})
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    return token, jwt.decode(token, options={"verify_signature": False})["sub"]


async def _is(answers: Callable[[], Awaitable[tuple[int, ...]]], wanted: tuple[int, ...]) -> bool:
    return await answers() == wanted
