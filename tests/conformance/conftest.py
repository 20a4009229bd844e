"""The product as ``aqueduct up`` starts it, once for the conformance suite, with its world of
principals; the route x rule table is printed at the end of the run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aqueduct_cli.embedded import free_port, wait_for_port
from tests.conformance import report
from tests.conformance.routes import ROUTES
from tests.conformance.rules import limited_cells
from tests.conformance.world import World, provision, wait_until_usable, write_config
from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mcp_tools() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mcp_tools", "--port", str(port)], cwd=ROOT
    )
    wait_for_port("127.0.0.1", port, timeout=60, process=process)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def conformance_stack(tmp_path_factory: pytest.TempPathFactory, upstream, mcp_tools: str) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("conformance")
    env = {
        # One fresh token per rate-limited cell: more than the default ten per user.
        "AQUEDUCT_DIRECTORY_MAX_TOKENS_PER_USER": "1000",
        # The body-size rule sends a body over the limit; 1 MiB keeps that cheap.
        "AQUEDUCT_PROXY_MAX_BODY_BYTES": str(1024 * 1024),
    }
    stack = Stack(workdir, write_config(workdir / "aqueduct.yaml", upstream.url), env=env).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def world(conformance_stack: Stack, mcp_tools: str) -> World:
    stack = conformance_stack
    plain_rows = [row.name for row in ROUTES]
    built = asyncio.run(
        provision(
            stack.urls,
            stack.admin_username,
            stack.admin_password,
            mcp_tools,
            limited_cells(ROUTES),
            plain_rows,
        )
    )
    unusable = {built.token("expired"), built.token("revoked"), built.token("regenerated")}
    asyncio.run(
        wait_until_usable(stack.urls["proxy"], [v for v in built.tokens.values() if v not in unusable])
    )
    built.settle_credentials()
    return built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if report.TABLE:
        terminalreporter.write_sep("=", "conformance: route x rule")
        for line in report.TABLE:
            terminalreporter.write_line(line)
