"""The auth service as the launcher runs it: ``python -m aqueduct_auth``, configured by environment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from auth_testing import ADMIN_PASSWORD, ADMIN_USERNAME, SECRET_KEY, DirectoryTestResponder, sign_in
from nats.aio.client import Client as NATS

from aqueduct_cli.embedded import EmbeddedNats, free_port, wait_for_port
from aqueduct_libs import names
from aqueduct_libs.sessions import SessionVerifier

pytestmark = pytest.mark.nats


class AuthProcess:
    def __init__(self, port: int, process: subprocess.Popen, log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log


@pytest.fixture
def auth_process(
    auth_nats: EmbeddedNats, directory: DirectoryTestResponder, tmp_path: Path
) -> Iterator[AuthProcess]:
    port = free_port()
    env = {
        **os.environ,
        "AQUEDUCT_NATS_URL": auth_nats.url,
        "AQUEDUCT_DATA_DIR": str(tmp_path),
        "AQUEDUCT_SECRET_KEY": SECRET_KEY,
        "AQUEDUCT_AUTH_PORT": str(port),
        "AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USERNAME,
        "AQUEDUCT_AUTH_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "AQUEDUCT_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "auth.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "aqueduct_auth"], env=env, stdout=out, stderr=out)
    try:
        wait_for_port("127.0.0.1", port, process=process)
        yield AuthProcess(port, process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_python_m_aqueduct_auth_serves_until_sigterm(auth_process: AuthProcess, nc: NATS) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{auth_process.port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        assert "python_info" in (await client.get("/metrics")).text
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert {"/auth/token", "/auth/refresh", "/auth/logout", "/auth/exchange"} <= set(paths)
        answer = await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        assert answer.status_code == 200
        assert (await sign_in(client, ADMIN_USERNAME, "wrong")).status_code == 401
        metrics = (await client.get("/metrics")).text
        assert 'aqueduct_auth_events_total{method="local",reason="",type="SignedIn"} 1.0' in metrics
        assert (
            'aqueduct_auth_events_total{method="local",reason="invalid_credentials",type="SignInFailed"} 1.0'
            in metrics
        )
    kv = await nc.jetstream().key_value(names.AUTH_KEYS_BUCKET)
    verifier = SessionVerifier()
    verifier.load_jwks((await kv.get("jwks")).value or b"")
    assert verifier.verify(answer.json()["access_token"]).admin

    auth_process.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(auth_process.process.wait, 15)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status names SIGTERM.
    assert code in (0, -signal.SIGTERM)
    text = auth_process.log.read_text()
    assert "Application shutdown complete" in text and "Traceback" not in text


async def test_sign_in_answers_503_when_the_directory_does_not_answer(auth_client, tmp_path) -> None:
    lonely_bus = EmbeddedNats(tmp_path / "nats").start()  # no directory on this bus
    try:
        async with auth_client(nats_url=lonely_bus.url, directory_timeout=0.5) as client:
            answer = await sign_in(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        assert answer.status_code == 503
        assert answer.json()["code"] == "directory_unavailable"
    finally:
        lonely_bus.stop()
