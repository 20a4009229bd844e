"""Fixtures of the accounting tests: a NATS server of their own, session keys in the KV bucket, and the
accounting service as a child process on real chDB."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from accounting_testing import AccountingProcess, SessionKeys
from nats.js import JetStreamContext

from aqueduct_cli.embedded import EmbeddedNats
from aqueduct_libs.bus import ensure_topology


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("accounting")


@pytest.fixture(scope="module")
def bus(module_dir: Path) -> Iterator[EmbeddedNats]:
    """A clean bus per test module: exact counts need a stream nobody else publishes to."""
    server = EmbeddedNats(module_dir / "nats").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def session_keys() -> SessionKeys:
    return SessionKeys()


@pytest.fixture(scope="module")
async def js(bus: EmbeddedNats, session_keys: SessionKeys) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(bus.url)
    jetstream = nc.jetstream()
    await ensure_topology(jetstream)
    await session_keys.publish(jetstream)
    yield jetstream
    await nc.close()


@pytest.fixture(scope="module")
def accounting(module_dir: Path, bus: EmbeddedNats, js: JetStreamContext) -> Iterator[AccountingProcess]:
    service = AccountingProcess(
        module_dir / "service",
        bus.url,
        {"AQUEDUCT_ACCOUNTING_ACK_WAIT_SECONDS": "3", "AQUEDUCT_ACCOUNTING_BUDGET_CHECK_SECONDS": "0.3"},
    ).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
async def admin_token(session_keys: SessionKeys, js: JetStreamContext) -> str:
    return await session_keys.signed_in("admin-1", admin=True, name="Admin")
