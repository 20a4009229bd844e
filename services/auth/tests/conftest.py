"""Fixtures of the auth service's tests: a clean NATS, a directory test responder, the app in-process.

The directory test responder answers ``directory.rpc.v1.sign_in`` the way the directory service does
(contract in docs/contracts.md): it is a peer service stood in for, so these tests do not depend on the
directory's progress. It is not a fake engine: NATS, SQLite and the identity provider are real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, SECRET_KEY, DirectoryTestResponder
from nats.aio.client import Client as NATS

from aqueduct_auth.bootstrap import bootstrap
from aqueduct_auth.settings import AuthSettings
from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs import names
from aqueduct_libs.settings import CommonSettings


@pytest.fixture(scope="module")
def auth_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A clean bus per module: the auth_keys bucket and AUTH stream hold only what these tests wrote."""
    server = EmbeddedNats(tmp_path_factory.mktemp("auth-nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def nc(auth_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    client = await nats.connect(auth_nats.url)
    yield client
    await client.drain()


@pytest.fixture(scope="module")
async def directory(nc: NATS) -> AsyncIterator[DirectoryTestResponder]:
    responder = DirectoryTestResponder()
    await responder.start(nc)
    await nc.flush()
    yield responder
    await responder.stop()


AuthClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def auth_client(
    auth_nats: EmbeddedNats, directory: DirectoryTestResponder, tmp_path: Path
) -> AuthClientFactory:
    """``async with auth_client(**settings) as client``: the auth app with its lifespan, over ASGI.

    Sign-in attempts are counted on the bus, shared by every auth process; each app starts with none
    recorded unless ``keep_attempts`` (a second process joining the first)."""

    @asynccontextmanager
    async def factory(
        data_dir: Path | None = None,
        nats_url: str | None = None,
        keep_attempts: bool = False,
        **overrides: Any,
    ) -> AsyncIterator[httpx.AsyncClient]:
        common = CommonSettings(
            nats_url=nats_url or auth_nats.url,
            data_dir=data_dir or tmp_path,
            secret_key=SECRET_KEY,
            public_ui_url="http://ui.test",
            auth_url="http://auth.test",
        )
        settings = AuthSettings(
            bootstrap_admin_username=ADMIN_USERNAME,
            bootstrap_admin_password=ADMIN_PASSWORD,
            common=common,
            **overrides,
        )
        service = await bootstrap(settings)
        app = service.app
        await service.start()
        try:
            if not keep_attempts:
                await _forget_attempts(common.nats_url)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://auth.test") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client
        finally:
            await service.stop()

    return factory


async def _forget_attempts(url: str) -> None:
    client = await nats.connect(url)
    try:
        await client.jetstream().purge_stream(f"KV_{names.AUTH_ATTEMPTS_BUCKET}")
    finally:
        await client.close()
